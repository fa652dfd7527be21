"""finn-plus-driver's ``FINNDMAOverlay`` arguments from a deploy package.

``FINNDMAOverlay(bitfile, platform, io_shape_dict, batch_size, fclk_mhz, ...)`` (finn-plus-driver
1.6.1, ``overlays/dma.py``) wants ``platform="zynq-iodma"`` for a Zynq/Kria shell, an
``io_shape_dict`` with the data types as ``"DataType['UINT8']"`` strings and one shape list per
input/output (``ishape_normal``, ``ishape_folded``, ``ishape_packed``, ``oshape_*``), and
``num_inputs``/``num_outputs``; none of it is in ``driver_config.json`` under those names.
:func:`overlay_args` takes the build's own ``settings.json`` ``driver_information`` verbatim when
the package carries it (``finn_settings``), after checking it describes the same I/O as
``driver_config.json``; otherwise it derives the arguments from ``driver_config.json``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sarvessel.runtime.board.errors import PackageError
from sarvessel.runtime.board.package import DeployPackage
from sarvessel.runtime.contract import RUNTIME_WEIGHTS_DIR

__all__ = ["Platform", "OverlayArgs", "io_shape_dict", "overlay_args", "DEFAULT_DRIVER"]

#: The overlay class for a design with input/output DMAs (finn-plus-driver ``DRIVER_TYPES``).
DEFAULT_DRIVER = "FINNDMAOverlay"
_SHAPE_KEYS = ("ishape_normal", "ishape_folded", "ishape_packed", "oshape_normal",
               "oshape_folded", "oshape_packed")


class Platform(str, Enum):
    """finn-plus-driver's ``platform`` argument."""

    ZYNQ_IODMA = "zynq-iodma"  #: Zynq / Kria shell with FINN's IODMAs (the KV260)
    ALVEO = "alveo"  #: Alveo / XRT shell


@dataclass
class OverlayArgs:
    """How to construct the overlay: ``get_driver_class(driver_type)(bitfile, **kwargs)``."""

    driver_type: str
    bitfile: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def io_shape_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The driver's ``io_shape_dict`` for ``driver_config.json``'s one input and one output."""
    inp, out = config["input"], config["output"]
    return {
        "idt": [f"DataType['{inp['finn_datatype']}']"],
        "odt": [f"DataType['{out['finn_datatype']}']"],
        "ishape_normal": [list(inp["shape_normal"])],
        "ishape_folded": [list(inp["shape_folded"])],
        "ishape_packed": [list(inp["shape_packed"])],
        "oshape_normal": [list(out["shape_normal"])],
        "oshape_folded": [list(out["shape_folded"])],
        "oshape_packed": [list(out["shape_packed"])],
        "num_inputs": 1,
        "num_outputs": 1,
        "idma_names": ["idma0"],
        "odma_names": ["odma0"],
        "number_of_external_weights": 0,
    }


def overlay_args(package: DeployPackage, *, batch_size: int = 1, download: bool = True,
                 platform: Platform = Platform.ZYNQ_IODMA) -> OverlayArgs:
    """The overlay class name, bitfile and keyword arguments for ``package``.

    batch_size: tiles per DMA transfer (the driver allocates buffers for this many).
    download: program the bitstream (False: attach to an already loaded one).
    Raises :class:`PackageError` when the package's ``finn_settings`` contradict
    ``driver_config.json``.
    """
    cfg = package.config
    derived = io_shape_dict(cfg)
    driver_type = DEFAULT_DRIVER
    kwargs: dict[str, Any] = {
        "platform": Platform(platform).value,
        "io_shape_dict": derived,
        "runtime_weights": bool(cfg["runtime_weights"]),
    }
    settings_name = cfg.get("finn_settings")
    if settings_name:
        path = package.root / settings_name
        try:
            info = json.loads(path.read_text(encoding="utf-8"))["driver_information"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PackageError(f"{path}: not a finn-plus settings.json with driver_information "
                               f"({exc})") from exc
        info = copy.deepcopy(info)
        driver_type = info.pop("driver_type", DEFAULT_DRIVER)
        _check_same_io(path.name, info.get("io_shape_dict") or {}, derived)
        kwargs.update(info)
    kwargs.update(
        batch_size=int(batch_size),
        fclk_mhz=float(cfg["clock_mhz"]),
        download=bool(download),
        runtime_weight_dir=str(package.root / RUNTIME_WEIGHTS_DIR),
    )
    return OverlayArgs(driver_type, str(package.bitfile), kwargs)


def _check_same_io(source: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    """The build's io_shape_dict must describe the I/O driver_config.json describes."""
    def norm_dt(v: Any) -> str:
        s = str(v)
        return s[s.index("[") + 1:s.index("]")].strip("'\"") if "[" in s else s

    for key in ("idt", "odt"):
        if [norm_dt(v) for v in theirs.get(key, [])] != [norm_dt(v) for v in ours[key]]:
            raise PackageError(f"{source}: {key} {theirs.get(key)} differs from "
                               f"driver_config.json's {ours[key]}")
    for key in _SHAPE_KEYS:
        if [list(s) for s in theirs.get(key, [])] != ours[key]:
            raise PackageError(f"{source}: {key} {theirs.get(key)} differs from "
                               f"driver_config.json's {ours[key]}")
