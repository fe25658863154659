"""edgecnn.quantize.lowering: SiLU, hard-sigmoid and squeeze-excite gates run in int8 in the litert file.

Tiny models of each block (MobileNetV3's hard-swish block with a hard-sigmoid gated squeeze-excite,
conv -> SiLU, EfficientNet's SiLU block with a sigmoid-gated squeeze-excite), quantised and converted
exactly as ``edgecnn export --quantize int8`` does, then read back: no float op, no QUANTIZE or
DEQUANTIZE inside the graph, and outputs close to PyTorch's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn.data.photos import sample_photos
from edgecnn.data.transforms import Preprocess, stack
from edgecnn.models.layers import ConvBNAct, MBConv

PP = Preprocess(res=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


class Tiny(nn.Module):
    """stem conv -> ``block`` -> global pool -> Linear, the shape of a zoo classifier."""

    def __init__(self, block: nn.Module, act: type[nn.Module], chs: int = 16) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, chs, 3, 2, act_layer=act)
        self.block = block
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chs, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "hardsigmoid_se":  # MobileNetV3: hard-swish MBConv, SE gated by a hard-sigmoid
        block = MBConv(16, 48, 16, 3, 1, nn.Hardswish, se_chs=16, se_gate=nn.Hardsigmoid)
        model = Tiny(block, nn.Hardswish)
    elif kind == "dense":  # DenseNet: concat -> BN -> ReLU -> conv (pre-activation), then a transition
        from edgecnn.models.densenet import DenseBlock, Transition

        model = Tiny(nn.Sequential(DenseBlock(2, 16, 8, 2, 0.0), Transition(32, 16)), nn.ReLU)
    elif kind == "silu":  # conv -> SiLU
        model = Tiny(ConvBNAct(16, 16, 3, act_layer=nn.SiLU), nn.SiLU)
    else:  # EfficientNet: SiLU MBConv, SE with a SiLU inside, gated by a sigmoid
        block = MBConv(16, 64, 16, 3, 1, nn.SiLU, se_chs=4, se_act=nn.SiLU)
        model = Tiny(block, nn.SiLU)
    model.eval()
    with torch.no_grad():  # trained-like BatchNorm statistics, so activations are not all ~0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
                m.weight.uniform_(0.5, 2.0)
    return model


KINDS = ("hardsigmoid_se", "silu", "silu_se")
GATES = {"hardsigmoid_se": torch.ops.aten.hardsigmoid.default, "silu": torch.ops.aten.silu_.default,
         "silu_se": torch.ops.aten.silu_.default}


def _targets(graph) -> set:
    return {n.target for n in graph.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("kind", KINDS)
def test_decomposition_is_the_same_function_in_float(kind):
    """silu -> x * sigmoid(x), hardsigmoid -> relu6(x + 3) * (1/6): same outputs (float rounding only)."""
    from edgecnn.quantize.lowering import decompose_gates
    from edgecnn.quantize.ptq import export_for_quantization

    model = _model(kind)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 3
    graph, _ = export_for_quantization(model, x[:1])
    assert GATES[kind] in _targets(graph)
    n = decompose_gates(graph)
    assert n == {"hardsigmoid_se": 1, "silu": 2, "silu_se": 4}[kind]
    assert not {GATES[kind], torch.ops.aten.silu.default, torch.ops.aten.hardsigmoid.default} & _targets(graph)
    with torch.no_grad():
        for i in range(len(x)):
            torch.testing.assert_close(graph(x[i:i + 1]), model(x[i:i + 1]), rtol=1e-5, atol=1e-6)


def test_the_float_model_and_the_reports_float_graph_keep_their_gates():
    from edgecnn.quantize.ptq import quantize_pt2e

    model = _model("hardsigmoid_se")
    x = stack(PP, sample_photos(8, seed=0))
    with torch.no_grad():
        before = model(x)
    q = quantize_pt2e(model, x, method="minmax", layout="nchw", progress=False)
    assert torch.ops.aten.hardsigmoid.default in _targets(q.float_graph)
    assert torch.ops.aten.hardsigmoid.default not in _targets(q.graph)
    assert isinstance(model.block.block[2].scale_activation, nn.Hardsigmoid)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_qat_prepares_the_gates_with_fake_quantisers_on_their_kernels_grids():
    """QAT's quantiser gets the same rewrite: SiLU's sigmoid is fake-quantised on LOGISTIC's fixed grid."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgecnn.quantize.ptq import export_for_quantization
    from edgecnn.quantize.qat import qat_quantizer

    model = _model("silu_se").train()
    graph, _ = export_for_quantization(model, torch.randn(2, 3, 32, 32))
    qat = prepare_qat_pt2e(graph, qat_quantizer())
    targets = _targets(qat)
    assert torch.ops.aten.silu.default not in targets and torch.ops.aten.silu_.default not in targets
    sig = [n for n in qat.graph.nodes if n.target == torch.ops.aten.sigmoid.default]
    assert len(sig) == 5  # four SiLUs and the squeeze-excite gate
    for node in sig:
        (fq,) = node.users  # the sigmoid's output fake-quantiser, shared by its consumers
        mod = getattr(qat, fq.target)
        assert float(mod.scale) == pytest.approx(1 / 256) and int(mod.zero_point) == -128, mod


def _fused_activations(data: bytes) -> list[tuple[str, int | None]]:
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append((names[max(code.builtinCode, code.deprecatedBuiltinCode)],
                    getattr(op.builtinOptions, "fusedActivationFunction", None)))
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
@pytest.mark.parametrize("kind", KINDS)
def test_gates_convert_to_an_all_integer_litert_file_close_to_pytorch(kind, tmp_path):
    from ai_edge_litert import schema_py_generated as tfl

    from edgecnn.converters.inspect import inspect_tflite
    from edgecnn.converters.litert import _pt2e_int8, float_io
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.converters.verify import compare

    model = _model(kind)
    calib = stack(PP, sample_photos(16, seed=0))
    native = _pt2e_int8(model, calib, "nhwc", "minmax")  # what the litert back end writes
    files = {"int8io": native, "floatio": float_io(native)}
    info = {}
    for io, data in files.items():
        (tmp_path / f"{io}.tflite").write_bytes(data)
        info[io] = inspect_tflite(tmp_path / f"{io}.tflite")
        assert info[io]["float_ops"] == 0 and info[io]["precision"] == "int8", info[io]["float_op_names"]
        assert info[io]["transpose"] == 0, info[io]["ops"]
    # no QUANTIZE/DEQUANTIZE inside: none with int8 I/O, one of each at the boundary with float I/O
    assert info["int8io"]["quantize"] == info["int8io"]["dequantize"] == 0, info["int8io"]["ops"]
    ops = _fused_activations(files["floatio"])
    assert ops[0][0] == "QUANTIZE" and ops[-1][0] == "DEQUANTIZE" and info["floatio"]["dequantize"] == 1

    kernels = info["int8io"]["ops"]
    if kind == "hardsigmoid_se":
        # hard-sigmoid = ADD with a fused RELU6, then MUL by 1/6; hard-swish is its own int8 kernel
        assert ("ADD", tfl.ActivationFunctionType.RELU6) in ops and kernels["HARD_SWISH"] == 3, ops
        assert kernels["MUL"] == 2 and "LOGISTIC" not in kernels  # the 1/6 and the SE gate
    else:
        silus = {"silu": 2, "silu_se": 4}[kind]  # SE: its inner SiLU; the gate's sigmoid is one more
        assert kernels["LOGISTIC"] == silus + (kind == "silu_se") and kernels["MUL"] == silus + (kind == "silu_se")

    m = TFLiteModel(files["int8io"])
    outs = {i for o in m.interpreter._get_ops_details() if o["op_name"] == "LOGISTIC" for i in o["outputs"]}
    logistic = [t for t in m.interpreter.get_tensor_details() if t["index"] in outs]
    assert len(logistic) == kernels.get("LOGISTIC", 0)
    for t in logistic:  # LOGISTIC's int8 kernel has one output grid: scale 1/256, zero point -128
        assert t["quantization"] == (pytest.approx(1 / 256), -128), t

    x = stack(PP, sample_photos(40, seed=3)[16:])
    with torch.no_grad():
        ref = model(x).numpy()
    for io, data in files.items():
        out = TFLiteModel(data).predict(x)
        c = compare(out, ref)
        assert c["cosine"] > 0.99 and c["top1_agreement"] >= 0.9, (io, c)


def test_per_layer_report_pairs_a_conv_before_an_in_place_silu_with_its_int8_output():
    """The numeric debugger's loggers shared storage with the logged tensor: ``silu_`` after a conv
    overwrote the float conv's log (-2 dB "SQNR" once the int8 graph's SiLU stopped being in place)."""
    from edgecnn.quantize.ptq import quantize_pt2e
    from edgecnn.quantize.report import layer_sqnr

    model = _model("silu_se")
    x = stack(PP, sample_photos(16, seed=0))
    q = quantize_pt2e(model, x, method="minmax", layout="nchw", progress=False)
    layers = {(l.name, l.op): l.sqnr_db for l in layer_sqnr(q, x[:4])}
    convs = {k: v for k, v in layers.items() if k[1] == "conv2d"}
    assert {"stem.0", "block.block.0.0", "block.block.1.0", "block.block.2.fc1"} <= {n for n, _ in convs}
    # measured 39-48 dB on these 8-bit tensors (the stem conv: 38 dB); a mismatched pair is near 0 dB
    assert min(convs.values()) > 25, convs
    assert ("block.block.2", "mul") in layers  # the squeeze-excite gate multiply is reported too


def test_lenet5_rbf_head_is_the_squared_distance_and_reloads_its_constants():
    from edgecnn.models import create_model

    model = create_model("lenet5").eval()
    head = model.output
    x = torch.randn(6, 84, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(head(x), -torch.cdist(x, head.centers) ** 2, rtol=1e-4, atol=1e-4)
    other = create_model("lenet5")
    with torch.no_grad():
        other.output.centers.neg_()
        other.output._derive()
    other.load_state_dict(model.state_dict())  # the derived weights follow the loaded centres
    assert torch.equal(other.output._weight, head._weight) and torch.equal(other.output._bias, head._bias)


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_lenet5_converts_to_an_all_integer_litert_file(tmp_path):
    """The RBF output layer (-||x - c||^2) was 5 float ops (SUM, SUB, then SOFTMAX after them)."""
    from edgecnn.converters.inspect import inspect_tflite
    from edgecnn.converters.litert import _pt2e_int8
    from edgecnn.models import create_model

    model = create_model("lenet5").eval()
    calib = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "lenet5_int8.tflite"
    path.write_bytes(_pt2e_int8(model, calib, "nhwc", "minmax"))
    info = inspect_tflite(path)
    # no float op and no DEQUANTIZE (QUANTIZE int8 -> int8 re-scales are integer ops)
    assert info["float_ops"] == 0 and info["dequantize"] == 0, info["float_op_names"]


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_softmax_after_a_flatten_gets_its_int8_kernel(tmp_path):
    """SqueezeNet's end (conv -> pool -> flatten -> softmax): litert-torch left the softmax float."""
    from edgecnn.converters.inspect import inspect_tflite
    from edgecnn.converters.litert import _pt2e_int8
    from edgecnn.converters.tflite_runtime import TFLiteModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Softmax(dim=1)).eval()
    calib = stack(PP, sample_photos(16, seed=0))
    data = _pt2e_int8(model, calib, "nhwc", "minmax")
    (tmp_path / "m.tflite").write_bytes(data)
    info = inspect_tflite(tmp_path / "m.tflite")
    assert info["float_ops"] == 0 and info["dequantize"] == 0 and info["ops"]["SOFTMAX"] == 1, info["ops"]
    x = stack(PP, sample_photos(24, seed=3)[16:])
    with torch.no_grad():
        ref = model(x).numpy()
    out = TFLiteModel(data).predict(x)
    assert abs(out - ref).max() < 3 / 256  # SOFTMAX's int8 grid is 1/256


def test_standalone_batch_norms_become_depthwise_convs_with_the_same_outputs():
    """Only the BatchNorms no conv absorbed are rewritten (2 dense layers' norm1 + the transition's)."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from edgecnn.quantize.lowering import batch_norms_as_depthwise
    from edgecnn.quantize.ptq import export_for_quantization

    model = _model("dense")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    graph, _ = export_for_quantization(model, x[:1])
    _fuse_conv_bn_(graph)  # what prepare_pt2e does first: conv -> BN folded, stem.1 and norm2 gone
    assert batch_norms_as_depthwise(graph) == 3
    assert torch.ops.aten.batch_norm.default not in _targets(graph)
    groups = [n.args[6] for n in graph.graph.nodes if n.target == torch.ops.aten.conv2d.default and len(n.args) > 6]
    assert sorted(groups) == [16, 24, 32]  # one depthwise conv per BatchNorm: groups = its channels
    with torch.no_grad():
        for i in range(len(x)):
            torch.testing.assert_close(graph(x[i:i + 1]), model(x[i:i + 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_densenet_pre_activation_batch_norms_convert_to_int8_depthwise_convs(tmp_path):
    """DenseNet-121's int8 file had 248 float ops (SUB, MUL, MUL, ADD per standalone BatchNorm)."""
    from edgecnn.converters.inspect import inspect_tflite
    from edgecnn.converters.litert import _pt2e_int8
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.converters.verify import compare

    model = _model("dense")
    data = _pt2e_int8(model, stack(PP, sample_photos(16, seed=0)), "nhwc", "minmax")
    (tmp_path / "m.tflite").write_bytes(data)
    info = inspect_tflite(tmp_path / "m.tflite")
    assert info["float_ops"] == 0 and info["dequantize"] == 0, info["float_op_names"]
    assert info["ops"]["DEPTHWISE_CONV_2D"] == 3, info["ops"]
    ops = _fused_activations(data)
    relu = __import__("ai_edge_litert.schema_py_generated", fromlist=["x"]).ActivationFunctionType.RELU
    assert ops.count(("DEPTHWISE_CONV_2D", relu)) == 3, ops  # the ReLU after each is fused
    x = stack(PP, sample_photos(40, seed=3)[16:])
    with torch.no_grad():
        ref = model(x).numpy()
    c = compare(TFLiteModel(data).predict(x), ref)
    assert c["cosine"] > 0.99 and c["top1_agreement"] >= 0.9, c
