"""edgecnn.quantize.adaround: AdaRound weight rounding on the converted PT2E graph, and ``--rounding``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from test_quantize import _assert_one_line_error, _photos_folder


def _toy() -> tuple[nn.Module, torch.Tensor]:
    """conv-bn-relu, depthwise conv, strided conv, linear at 16x16 px; random weights, seeded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 8, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    return model, torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def toy_pair():
    from edgecnn.quantize.ptq import quantize_pt2e

    model, x = _toy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    nearest = quantize_pt2e(model, x, method="minmax", layout="nchw", progress=False)
    ada = quantize_pt2e(model, x, method="minmax", layout="nchw", rounding="adaround", progress=False)
    # the exported graph's parameters are the model's own tensors where no BatchNorm was folded:
    # AdaRound gives the graph new ones, the float model keeps its weights
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    return model, x, nearest, ada


def _layer_values(graph, x: torch.Tensor) -> dict[str, list]:
    """Per conv/linear node name: [(input, dequantised weight, other args) per image], from running ``graph``."""
    seen: dict[str, list] = {}

    class Watch(torch.fx.Interpreter):
        def run_node(self, n):
            if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
                args, _ = self.fetch_args_kwargs_from_env(n)
                seen.setdefault(n.name, []).append(args)
            return super().run_node(n)

    with torch.no_grad():
        for i in range(x.shape[0]):
            Watch(graph).run(x[i:i + 1])
    return seen


def test_adaround_lowers_each_layer_output_error_and_writes_exact_grid_weights(toy_pair):
    _, x, nearest, ada = toy_pair
    report = ada.adaround
    assert ada.rounding == "adaround" and report["skipped"] == {} and report["seconds"] > 0
    assert [r["op"] for r in report["layers"]] == ["conv2d", "conv2d", "conv2d", "linear"]
    # measured 3 of 4: on the held-out images the first conv's AdaRound was 0.6% worse, so it stays nearest
    assert report["rounded"] >= 3
    for r in report["layers"]:
        if r["kept"] == "adaround":
            assert r["mse_adaround"] < r["mse_nearest"] and 0 < r["changed"] < 0.5, r

    # recomputed independently with the aten ops on the held-out images (the last quarter: 2 of 8),
    # where the toy's sampled rows are all output positions, so the report's MSEs must match these;
    # each layer's inputs come from the nearest graph (AdaRound collects them in one pass before it
    # rounds anything), its weights from either graph
    assert all(r["rows_held"] == r["rows_fit"] // 3 for r in report["layers"])
    before, after = _layer_values(nearest.graph, x[6:]), _layer_values(ada.graph, x[6:])
    params = dict(nearest.graph.named_parameters())
    op_of = {n.name: n.target for n in nearest.graph.graph.nodes}
    for r, name in zip(report["layers"], before):
        float_w = params[next(n for n in nearest.graph.graph.nodes if n.name == name).args[1].args[0].args[0].target]
        mse = {}
        for label, pick in (("nearest", 0), ("adaround", 1)):  # inputs as the nearest graph computes them
            err = [op_of[name](b[0], (b, a)[pick][1], *b[2:]) - op_of[name](b[0], float_w, *b[2:])
                   for b, a in zip(before[name], after[name])]
            mse[label] = float(torch.cat([e.detach().flatten() for e in err]).pow(2).mean())
        assert mse["nearest"] == pytest.approx(r["mse_nearest"], rel=1e-3)
        if r["kept"] == "adaround":
            assert mse["adaround"] == pytest.approx(r["mse_adaround"], rel=1e-3) and mse["adaround"] < mse["nearest"]
        else:  # the rejected rounding was not written
            assert mse["adaround"] == mse["nearest"]

    # written weights: exact int8 grid points on the unchanged per-channel scales; the rest untouched
    layers = [n for n in ada.graph.graph.nodes if n.name in before]
    for r, node in zip(report["layers"], layers):
        quant = node.args[1].args[0]
        w = ada.graph.get_parameter(quant.args[0].target).detach()
        scale = ada.graph.get_buffer(quant.args[1].target)
        assert torch.equal(scale, nearest.graph.get_buffer(quant.args[1].target))
        if r["kept"] == "adaround":
            k = w / scale.view(-1, *([1] * (w.dim() - 1)))
            assert (k - k.round()).abs().max() < 1e-3 and k.abs().max() <= 127 + 1e-3
        else:
            assert torch.equal(w, params[quant.args[0].target])


def test_adaround_file_converts_and_runs_like_pytorch(toy_pair):
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.quantize.ptq import to_tflite

    model, x, _, ada = toy_pair
    out = TFLiteModel(to_tflite(ada)).predict(x)
    with torch.no_grad():
        ref, sim = model(x).numpy(), ada.simulate(x).numpy()

    def cosine(a, b):
        return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    assert cosine(out, ref) > 0.99 and cosine(out, sim) > 0.999  # the file holds the AdaRound integers


def test_cli_unknown_rounding(cli, tmp_path):
    calib = _photos_folder(tmp_path / "calib", 10)
    _assert_one_line_error(cli("quantize", "mobilenet_v2", "--alpha", "0.35", "--res", "64", "--calib-data",
                               calib, "--rounding", "bogus"), "unknown weight rounding 'bogus'", "adaround")


def test_qat_does_not_take_adaround(tmp_path):
    from edgecnn.errors import EdgeCNNError
    from edgecnn.pipelines.quantize import QuantizeOptions

    with pytest.raises(EdgeCNNError, match="--rounding adaround"):
        QuantizeOptions(calib_data=tmp_path, qat_epochs=1, rounding="adaround")
