"""The board's accelerator as a backend: ``fpga`` (the KV260 through PYNQ) and ``sim`` (the same
deploy package, buffers, packing and CPU tail, with the accelerator replaced by software).

Both wrap a core of :mod:`sarvessel.runtime.board.accelerator`, which returns the head map after
the package's CPU tail (per-channel scale and bias, NCHW); this module checks it against the
model contract the package carries, puts it on the anchor grid like the ONNX backend does and
hands it to the shared post-processing stage. PYNQ and finn-plus-driver are imported only when
an ``fpga`` core is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sarvessel.runtime.board.accelerator import FpgaAccelerator, PackedAccelerator, SimAccelerator
from sarvessel.runtime.board.package import DeployPackage, load_package
from sarvessel.runtime.contract import DRIVER_CONFIG, ModelMetadata
from sarvessel.runtime.errors import DeployPackageError
from sarvessel.runtime.post.decode import unpack_subgrid


class AcceleratorBackend:
    """A board core (``fpga`` or ``sim``) behind the backend interface.

    core: the accelerator core; its package's ``model`` entry is the model contract.
    Raises :class:`~sarvessel.runtime.errors.DeployPackageError` when the package's tiles or
    head map do not match its own model contract.
    """

    def __init__(self, core: PackedAccelerator) -> None:
        pkg = core.package
        self.core = core
        self.name = core.name
        self.metadata = ModelMetadata.from_dict(pkg.model, source=pkg.root / DRIVER_CONFIG)
        self.model_dir: Path = pkg.root
        m = self.metadata
        if (core.channels, core.tile_size) != (m.channels, m.tile_size):
            raise DeployPackageError(
                f"{pkg.root}: the accelerator takes {core.channels} x {core.tile_size} px tiles, "
                f"its model contract {m.channels} x {m.tile_size}")
        want = (m.graph_channels, m.graph_size, m.graph_size)
        if tuple(core.out_shape) != want:
            raise DeployPackageError(f"{pkg.root}: the accelerator's head map "
                                     f"{list(core.out_shape)} is not the model contract's "
                                     f"{list(want)}")
        self.channels, self.tile_size = m.channels, m.tile_size
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """The package's driver config and what computes the accumulators (bitstream or
        simulator graph): a resumed scene reuses rows only from the same accelerator."""
        if self._fingerprint is None:
            pkg = self.core.package
            h = hashlib.sha256((pkg.root / DRIVER_CONFIG).read_bytes())
            source = pkg.bitfile if isinstance(self.core, FpgaAccelerator) else self.core.model_path
            h.update(Path(source).read_bytes())
            self._fingerprint = f"{self.name}:{h.hexdigest()[:32]}"
        return self._fingerprint

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The head map of ``batch`` (``uint8 [B, C, T, T]``) on the anchor grid."""
        return unpack_subgrid(self.core.infer(batch), self.metadata.subgrid)

    def accumulators(self, batch: np.ndarray) -> np.ndarray:
        """The accelerator's integer output before the CPU tail (``[B, H, W, C]``, NHWC)."""
        return self.core.accumulators(batch)


def sim_backend(package: Path | str | DeployPackage, *, batch_size: int = 1,
                paced: bool = False, threads: int | None = None) -> AcceleratorBackend:
    """The ``sim`` backend of ``package`` (a simulator package needs no bitstream). paced: hold
    each transfer to the package's estimated accelerator time."""
    return AcceleratorBackend(SimAccelerator(package, batch_size=batch_size, paced=paced,
                                             threads=threads))


def fpga_backend(package: Path | str | DeployPackage, *, batch_size: int = 1
                 ) -> AcceleratorBackend:
    """The ``fpga`` backend: loads the package's bitstream on this board (one clear error
    before any tile runs when there is no board, the package does not validate or the
    bitstream does not match it)."""
    pkg = package if isinstance(package, DeployPackage) else load_package(package,
                                                                           need_bitstream=True)
    return AcceleratorBackend(FpgaAccelerator(pkg, batch_size=batch_size))
