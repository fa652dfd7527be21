"""Reading a deploy package on the board: ``driver_config.json`` v1, the manifest, self-test.

The schema, the board's optional keys included (``bitfile_sha256``, ``sim``, ``selftest``,
``build``, ``estimate.cycles_per_tile``), is :mod:`sarvessel.runtime.contract`'s; this module adds
what only a board needs: the files those keys name, the bitstream checksum and the manifest.

Every file of a package can be listed with its SHA-256 in ``MANIFEST.sha256`` (``sha256sum``
format, so ``sha256sum -c MANIFEST.sha256`` checks it on a board without Python):
:func:`write_manifest`, :func:`verify_manifest`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarvessel.runtime import contract
from sarvessel.runtime.board.errors import ChecksumError, PackageError
from sarvessel.runtime.contract import DRIVER_CONFIG, SCHEMA_VERSION
from sarvessel.runtime.errors import DeployPackageError

__all__ = [
    "DRIVER_CONFIG", "MANIFEST", "SCHEMA_VERSION", "DeployPackage", "load_package",
    "validate_driver_config", "sha256_file", "package_files", "write_manifest", "read_manifest",
    "verify_manifest",
]

#: The package manifest: every other file with its SHA-256, ``sha256sum`` format.
MANIFEST = "MANIFEST.sha256"
#: Self-test files used when ``driver_config.json`` names none.
SELFTEST_INPUTS = "selftest/inputs.npy"
SELFTEST_EXPECTED = "selftest/expected_acc.npy"

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeployPackage:
    """A validated deploy package: its folder and parsed ``driver_config.json``."""

    root: Path
    config: dict[str, Any]

    @property
    def bitfile(self) -> Path:
        """The bitstream (``accelerator.bit``); PYNQ finds the ``.hwh`` beside it."""
        return self.root / self.config["bitfile"]

    @property
    def hwh(self) -> Path:
        return self.root / self.config["hwh"]

    @property
    def has_bitstream(self) -> bool:
        """Whether the bitstream and hardware handoff are there (a simulator package has
        everything but them)."""
        return all(p.is_file() and p.stat().st_size > 0 for p in (self.bitfile, self.hwh))

    @property
    def input(self) -> dict[str, Any]:
        return self.config["input"]

    @property
    def output(self) -> dict[str, Any]:
        return self.config["output"]

    @property
    def model(self) -> dict[str, Any]:
        """The model's JSON sidecar (tile_size, channels, stride, reg_max, nc, ...)."""
        return self.config["model"]

    @property
    def clock_mhz(self) -> float:
        return float(self.config["clock_mhz"])

    @property
    def sim_model(self) -> Path | None:
        """The ONNX graph the simulator runs (host tile to accumulators), None if none."""
        sim = self.config.get("sim")
        return self.root / sim["model"] if sim else None

    @property
    def selftest(self) -> tuple[Path, Path] | None:
        """``(inputs.npy, expected_acc.npy)`` when the package has self-test tiles."""
        st = self.config.get("selftest") or {}
        pair = (self.root / st.get("inputs", SELFTEST_INPUTS),
                self.root / st.get("expected_acc", SELFTEST_EXPECTED))
        return pair if all(p.is_file() for p in pair) else None

    @property
    def seconds_per_tile(self) -> float | None:
        """The accelerator's estimated time per tile: ``estimate.cycles_per_tile`` at
        ``clock_mhz``, else ``1 / estimate.tiles_per_s``; None without an estimate."""
        est = self.config.get("estimate") or {}
        if est.get("cycles_per_tile"):
            return float(est["cycles_per_tile"]) / (self.clock_mhz * 1e6)
        if est.get("tiles_per_s"):
            return 1.0 / float(est["tiles_per_s"])
        return None

    def check_bitstream(self) -> str:
        """SHA-256 of the bitstream; raises :class:`ChecksumError` when it differs from
        ``bitfile_sha256`` or the manifest's, :class:`PackageError` when it is missing."""
        if not self.has_bitstream:
            raise PackageError(f"{self.root}: no bitstream ({self.config['bitfile']} and "
                               f"{self.config['hwh']}): a simulator-only package")
        digest = sha256_file(self.bitfile)
        recorded = self.config.get("bitfile_sha256")
        manifest = read_manifest(self.root) if (self.root / MANIFEST).is_file() else {}
        for source, want in ((DRIVER_CONFIG, recorded),
                             (MANIFEST, manifest.get(self.config["bitfile"]))):
            if want and want.lower() != digest:
                raise ChecksumError(
                    f"{self.bitfile}: bitstream does not match its package (SHA-256 {digest[:12]}"
                    f"…, {source} records {want[:12]}…): rebuild or reflash the package")
        hwh_want = manifest.get(self.config["hwh"])
        if hwh_want and sha256_file(self.hwh) != hwh_want.lower():
            raise ChecksumError(f"{self.hwh}: hardware handoff does not match {MANIFEST}")
        return digest


def load_package(path: Path | str, *, need_bitstream: bool = False) -> DeployPackage:
    """Validate the deploy package folder ``path`` (:func:`~sarvessel.runtime.contract.
    read_deploy_package`) and return it.

    need_bitstream: also require the bitstream and ``.hwh`` (the ``fpga`` backend); the
    default accepts a simulator package without them. Raises :class:`PackageError` naming
    the folder and the first problem.
    """
    try:
        data = contract.read_deploy_package(path, need_bitstream=need_bitstream)
    except PackageError:
        raise
    except DeployPackageError as exc:
        raise PackageError(str(exc)) from exc
    return DeployPackage(Path(path), data)


def validate_driver_config(data: Any) -> None:
    """Check a ``driver_config.json`` mapping against the contract (no file checks)."""
    try:
        contract.validate_driver_config(data)
    except DeployPackageError as exc:
        raise PackageError(str(exc)) from exc


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def package_files(root: Path) -> Iterator[Path]:
    """Every regular file of a package folder but the manifest, as sorted relative paths."""
    root = Path(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not p.is_symlink() and rel.as_posix() != MANIFEST:
            yield rel


def write_manifest(root: Path) -> dict[str, str]:
    """Write ``MANIFEST.sha256`` (``sha256sum`` format) listing every file; return it."""
    root = Path(root)
    digests = {rel.as_posix(): sha256_file(root / rel) for rel in package_files(root)}
    _check_names(digests)
    text = "".join(f"{d}  {name}\n" for name, d in digests.items())
    (root / MANIFEST).write_text(text, encoding="utf-8")
    return digests


def read_manifest(root: Path) -> dict[str, str]:
    """Parse ``MANIFEST.sha256``: relative path to hex digest."""
    path = Path(root) / MANIFEST
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the manifest ({exc})") from exc
    for n, line in enumerate(lines, 1):
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if not m:
            raise PackageError(f"{path}:{n}: not a sha256sum line")
        out[m.group(2)] = m.group(1).lower()
    return out


def verify_manifest(root: Path, expected: Mapping[str, str] | None = None) -> None:
    """Check every file of ``root`` against ``expected`` (default: its own manifest): the same
    files, the same digests. Raises :class:`ChecksumError` naming the first difference."""
    root = Path(root)
    want = dict(expected) if expected is not None else read_manifest(root)
    have = {rel.as_posix() for rel in package_files(root)}
    missing, extra = sorted(set(want) - have), sorted(have - set(want))
    if missing:
        raise ChecksumError(f"{root}: {len(missing)} file(s) missing, first {missing[0]}")
    if extra:
        raise ChecksumError(f"{root}: {len(extra)} file(s) not in the manifest, first {extra[0]}")
    for name, digest in want.items():
        got = sha256_file(root / name)
        if got != digest:
            raise ChecksumError(f"{root / name}: SHA-256 {got[:12]}… does not match the "
                                f"manifest's {digest[:12]}…")


def _check_names(digests: Mapping[str, str]) -> None:
    for name in digests:
        if "\n" in name or "\\" in name:
            raise PackageError(f"{name!r}: file names with newlines or backslashes cannot be "
                               "listed in a sha256sum manifest")
