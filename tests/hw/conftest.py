"""Fixtures of the hardware tests: QONNX detectors of the network contract.

``contract_qonnx`` exports the real detector (:mod:`sarvessel.model.network`) with the real
exporter (:mod:`sarvessel.quantize.export`) when they import; otherwise a stand-in Brevitas network
of exactly the contract's structure (UINT8 input with no input quantizer, 8-bit first conv,
4-bit Conv+BN+QuantReLU+MaxPool body to stride 8, masked block-diagonal head, 8-bit final conv
with bias) exported with ``brevitas.export.export_qonnx`` + qonnx cleanup.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _finn_or_skip() -> None:
    try:
        import brevitas  # noqa: F401
        import finn.transformation.fpgadataflow.set_folding  # noqa: F401
        import qonnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"finn-plus / brevitas / torch not importable: {exc}")


def standin_network(channels: int = 2, *, reg_max: int = 16, nc: int = 1, hidden: int = 24):
    """Stand-in of the contract network (used when sarvessel.model.network is unavailable)."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
    from torch import nn

    def block(cin: int, cout: int, wbits: int, abits: int, k: int = 3) -> list[nn.Module]:
        return [
            qnn.QuantConv2d(cin, cout, k, padding=k // 2, bias=False,
                            weight_quant=Int8WeightPerChannelFloat, weight_bit_width=wbits),
            nn.BatchNorm2d(cout),
            qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=abits),
        ]

    layers: list[nn.Module] = []
    cin = channels
    for i, w in enumerate((8, 16, 32, 64)):
        layers += block(cin, w, 8 if i == 0 else 4, 4)
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        cin = w
    h2 = 2 * hidden
    layers += block(cin, h2, 4, 4)
    layers += block(h2, h2, 4, 8, k=1)
    final = qnn.QuantConv2d(h2, 4 * reg_max + nc, 1, bias=True,
                            weight_quant=Int8WeightPerChannelFloat, weight_bit_width=8)
    net = nn.Sequential(*layers, final)
    with torch.no_grad():
        m1 = torch.zeros(h2, h2, 1, 1)
        m1[:hidden, :hidden] = 1
        m1[hidden:, hidden:] = 1
        layers[-3].weight.mul_(m1)
        m2 = torch.zeros(4 * reg_max + nc, h2, 1, 1)
        m2[: 4 * reg_max, :hidden] = 1
        m2[4 * reg_max :, hidden:] = 1
        final.weight.mul_(m2)
    return net


def _calibrate(net, channels: int) -> None:
    """Training-mode passes over SAR-like tiles so BN statistics and activation scales fit the
    data (cumulative BN averages); an uncalibrated net saturates and gives a constant output,
    which would make the bit-exactness checks meaningless."""
    import torch
    from torch import nn

    from sarvessel.hw.verify import synthetic_sar_tiles

    torch.manual_seed(0)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for seed in range(4):
            x = synthetic_sar_tiles(4, channels=channels, tile=64, seed=seed)
            net(torch.from_numpy(x).float())
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    net.eval()


def export_contract_qonnx(path: Path, *, tile: int, channels: int = 2,
                          **overrides: object) -> tuple[Path, str]:
    """Export the contract network to ``path``; return it and which network was used.
    ``overrides``: ModelConfig fields of the real network (ignored by the stand-in)."""
    import torch

    torch.manual_seed(0)
    try:
        from sarvessel.model.config import scene_config, ssdd_config
        from sarvessel.model.network import build_model
        from sarvessel.quantize.export import export_qonnx
    except ImportError:
        from brevitas.export import export_qonnx as brevitas_export
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model

        net = standin_network(channels)
        _calibrate(net, channels)
        brevitas_export(net, torch.randint(0, 256, (1, channels, tile, tile)).float(),
                        export_path=str(path), dynamo=False)
        mw = cleanup_model(ModelWrapper(str(path)))
        mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
        mw.save(str(path))
        return path, "standin"
    cfg = (scene_config if channels == 2 else ssdd_config)(tile_size=tile, **overrides)
    net = build_model(cfg)
    _calibrate(net, channels)
    export_qonnx(net, path, tile=tile, channels=channels)
    return path, "sarvessel.model.network"


@pytest.fixture(scope="session")
def contract_qonnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract detector at the scene tile size (2 x 512 x 512), as cleaned QONNX."""
    _finn_or_skip()
    path, _ = export_contract_qonnx(
        tmp_path_factory.mktemp("qonnx") / "contract_512.onnx", tile=512
    )
    return path


@pytest.fixture(scope="session")
def small_qonnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network at a 64 px tile (fast to execute in Python)."""
    _finn_or_skip()
    path, _ = export_contract_qonnx(tmp_path_factory.mktemp("qonnx") / "contract_64.onnx", tile=64)
    return path


@pytest.fixture(scope="session")
def standin_qonnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in network (always, even when the real one exists) at a 64 px tile."""
    _finn_or_skip()
    import torch
    from brevitas.export import export_qonnx as brevitas_export
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = tmp_path_factory.mktemp("qonnx") / "standin_64.onnx"
    net = standin_network(2)
    _calibrate(net, 2)
    brevitas_export(net, torch.randint(0, 256, (1, 2, 64, 64)).float(),
                    export_path=str(path), dynamo=False)
    mw = cleanup_model(ModelWrapper(str(path)))
    mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
    mw.save(str(path))
    return path


@pytest.fixture(scope="session")
def flow_512(contract_qonnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """One estimate flow run on the 512 px contract network (shared by several tests)."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(output_dir=tmp_path_factory.mktemp("flow512"))
    return cfg, run_flow(contract_qonnx, cfg)


@pytest.fixture(scope="session")
def flow_64(small_qonnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """The estimate flow on the 64 px network (for verification and resuming)."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(output_dir=tmp_path_factory.mktemp("flow64"), tile_size=64, tile_overlap=8)
    return cfg, run_flow(small_qonnx, cfg)
