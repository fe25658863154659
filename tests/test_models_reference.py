"""The reference models from CNN history against their published sizes, plus layout and knob checks.

Convention: 1 MAC = one multiply-add. ``edgecnn.model_stats`` counts MACs with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products only; FLOPs / 2), on
one image, in eval mode (auxiliary heads do not run). torchvision's "GFLOPS" column counts the same
MACs. Parameter counts are exact where the source prints them exactly; MACs within 2% (the sources
round to two decimals).
"""

from __future__ import annotations

import pytest
import torch

import edgecnn
from edgecnn.errors import EdgeCNNError
from edgecnn.models.alexnet import AlexNet
from edgecnn.models.convnext import ConvNeXt
from edgecnn.models.densenet import DenseNet
from edgecnn.models.layers import DropPath
from edgecnn.models.lenet import C3_TABLE, SparseConv2d
from edgecnn.models.vgg import VGG

TV = "torchvision docs, models table (acc/params/GFLOPS)"
G = 1e9

# name, extra create_model kwargs, res, published params, params exact?, published MACs, source
PUBLISHED = [
    # LeNet-5 (LeCun et al. 1998, Sec. II.B): "60,000 trainable parameters"; MACs from its per-layer
    # connection counts minus one bias connection per unit: C1 122,304-4,704, C3 151,600-1,600,
    # C5 48,120-120, F6 10,164-84. (edgecnn also counts S2/S4's per-map coefficient, 1,576, and the
    # RBF distances, 840: 328,096 in all.)
    ("lenet5", {"num_classes": 10}, 32, 60_000, True, 117_600 + 150_000 + 48_000 + 10_080,
     "LeCun 1998 Sec. II.B"),
    # The common dense-C3 modern variant, counted by hand: 156 + 2,416 + 48,120 + 10,164 + 850.
    ("lenet5_dense", {"num_classes": 10}, 32, 61_706, True,
     28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 16 * 25 * 120 + 120 * 84 + 84 * 10, "hand count"),
    ("alexnet", {}, 224, 61_100_840, True, 0.71 * G, TV),
    # ZFNet: the paper (Zeiler & Fergus 2014, Fig. 3) gives layer shapes, not a total; counted by
    # hand from them (the same 62,357,608 as e.g. Table 1.4 of "Computational Analysis and Deep
    # Learning for Medical Care", Wiley 2021).
    ("zfnet", {}, 224, 14_208 + 614_656 + 885_120 + 1_327_488 + 884_992 + 37_752_832 + 16_781_312
     + 4_097_000, True,
     110**2 * 96 * 147 + 26**2 * 256 * 96 * 25 + 13**2 * 384 * 9 * (256 + 384 + 256)
     + 9216 * 4096 + 4096 * 4096 + 4096 * 1000, "hand count from the paper's Fig. 3"),
    ("vgg11", {}, 224, 132_863_336, True, 7.61 * G, TV),
    ("vgg11_bn", {}, 224, 132_868_840, True, 7.61 * G, TV),
    ("vgg13", {}, 224, 133_047_848, True, 11.31 * G, TV),
    ("vgg13_bn", {}, 224, 133_053_736, True, 11.31 * G, TV),
    ("vgg16", {}, 224, 138_357_544, True, 15.47 * G, TV),
    ("vgg16_bn", {}, 224, 138_365_992, True, 15.47 * G, TV),
    ("vgg19", {}, 224, 143_667_240, True, 19.63 * G, TV),
    ("vgg19_bn", {}, 224, 143_678_248, True, 19.63 * G, TV),
    # torchvision's 6,624,904 is without the auxiliary heads; with them, 13,004,888 (its
    # GoogLeNet(aux_logits=True)). MACs are the same: the heads do not run at inference.
    ("googlenet", {}, 224, 6_624_904, True, 1.50 * G, TV),
    ("googlenet", {"aux_logits": True}, 224, 13_004_888, True, 1.50 * G, "torchvision, aux_logits=True"),
    # torchvision's 27,161,264 includes the AuxLogits head (3,326,696 parameters).
    ("inception_v3", {"aux_logits": True}, 299, 27_161_264, True, 5.71 * G, TV),
    ("inception_v3", {}, 299, 27_161_264 - 3_326_696, True, 5.71 * G, "torchvision minus AuxLogits"),
    ("resnet18", {}, 224, 11_689_512, True, 1.81 * G, TV),
    ("resnet34", {}, 224, 21_797_672, True, 3.66 * G, TV),
    ("resnet50", {}, 224, 25_557_032, True, 4.09 * G, TV),
    ("resnet101", {}, 224, 44_549_160, True, 7.80 * G, TV),
    ("resnet152", {}, 224, 60_192_808, True, 11.51 * G, TV),
    # SENet paper (Hu et al. 2018), Table 2: SE-ResNet-50 28.09M params, 3.87 GFLOPs (= MACs; its
    # ResNet-50 row, 3.86, is the stride-in-1x1 original, not torchvision's 4.09).
    ("se_resnet50", {}, 224, 28.09e6, False, 3.87 * G, "Hu et al. 2018, Table 2"),
    ("densenet121", {}, 224, 7_978_856, True, 2.83 * G, TV),
    ("densenet161", {}, 224, 28_681_000, True, 7.73 * G, TV),
    ("densenet169", {}, 224, 14_149_480, True, 3.36 * G, TV),
    ("densenet201", {}, 224, 20_013_928, True, 4.29 * G, TV),
    ("convnext_tiny", {}, 224, 28_589_128, True, 4.46 * G, TV),
    ("convnext_small", {}, 224, 50_223_688, True, 8.68 * G, TV),
    ("convnext_base", {}, 224, 88_591_464, True, 15.36 * G, TV),
]


@pytest.mark.parametrize("name, kwargs, res, params, exact, macs, source", PUBLISHED,
                         ids=[f"{r[0]}{'-aux' if r[1].get('aux_logits') else ''}" for r in PUBLISHED])
def test_published_params_and_macs(name, kwargs, res, params, exact, macs, source):
    with torch.device("meta"):
        model = edgecnn.create_model(name, **kwargs)
    stats = edgecnn.model_stats(model, res=res)
    if exact:
        assert stats.params == params, source
    else:
        assert stats.params == pytest.approx(params, rel=0.01), source
    assert stats.macs == pytest.approx(macs, rel=0.02), source


# One real forward per family, at the smallest input the family accepts (LeNet: its only one).
FORWARD = ["lenet5", "lenet5_dense", "alexnet", "zfnet", "vgg11_bn", "googlenet", "inception_v3",
           "resnet18", "se_resnet50", "densenet121", "convnext_tiny"]


@pytest.mark.parametrize("name", FORWARD)
def test_real_forward_at_minimum_resolution(name):
    torch.manual_seed(0)
    res = edgecnn.get_spec(name).min_res
    model = edgecnn.create_model(name, num_classes=7, in_chans=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["alexnet", "zfnet", "vgg11", "googlenet", "inception_v3",
                                  "densenet121", "convnext_tiny"])
def test_one_pixel_below_minimum_is_rejected_and_really_fails(name):
    spec = edgecnn.get_spec(name)
    with pytest.raises(EdgeCNNError, match=f"at least {spec.min_res}x{spec.min_res}"):
        spec.check_res(spec.min_res - 1)
    with torch.device("meta"):
        model = edgecnn.create_model(name).eval()
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, spec.min_res - 1, spec.min_res - 1, device="meta"))


def test_lenet5_takes_only_32px(cli):
    r = cli("info", "lenet5", "--res", "64")
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert "lenet5 takes only 32x32 inputs" in r.err


def test_lenet5_defaults_to_grayscale_with_its_own_normalisation():
    cfg = edgecnn.create_model("lenet5").edgecnn_config
    assert (cfg.in_chans, cfg.default_res, cfg.mean, cfg.std) == (1, 32, (0.5,), (0.5,))


def test_lenet5_c3_reads_exactly_the_papers_table():
    torch.manual_seed(0)
    conv = SparseConv2d(C3_TABLE, 5)
    x = torch.randn(1, 6, 10, 10, requires_grad=True)
    out = conv(x)
    assert out.shape == (1, 16, 6, 6)
    for i, row in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(out[0, i].sum(), x, retain_graph=True)
        reads = {c for c in range(6) if grad[0, c].abs().sum() > 0}
        assert reads == set(row), i
    # 60 connections x 25 weights + 16 biases, Table I of the paper
    assert sum(p.numel() for p in conv.parameters()) == 1_516


def test_zfnet_feature_maps_follow_the_paper():
    with torch.device("meta"):
        model = edgecnn.create_model("zfnet").eval()
    sizes = []
    for m in model.features:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            m.register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1]))
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]  # conv1, pool, conv2, pool, conv3-5, pool


@pytest.mark.parametrize("name, keys", [
    ("alexnet", {"features.10.weight": (256, 256, 3, 3), "classifier.6.weight": (1000, 4096)}),
    ("vgg16_bn", {"features.41.running_var": (512,), "classifier.3.weight": (4096, 4096)}),
    ("googlenet", {"inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
                   "inception5b.branch4.1.bn.weight": (128,), "fc.weight": (1000, 1024)}),
    ("inception_v3", {"Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
                      "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1)}),
    ("resnet50", {"layer4.2.conv3.weight": (2048, 512, 1, 1), "layer2.0.downsample.1.weight": (512,)}),
    ("se_resnet50", {"layer1.0.se.fc1.weight": (16, 256, 1, 1), "layer4.2.se.fc2.bias": (2048,)}),
    ("densenet121", {"features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
                     "features.transition3.conv.weight": (512, 1024, 1, 1), "features.norm5.weight": (1024,)}),
    ("convnext_tiny", {"features.0.1.weight": (96,), "features.5.3.block.3.weight": (1536, 384),
                       "features.7.2.layer_scale": (768, 1, 1), "classifier.0.weight": (768,)}),
])
def test_torchvision_state_dict_keys(name, keys):
    with torch.device("meta"):
        sd = edgecnn.create_model(name).state_dict()
    for key, shape in keys.items():
        assert tuple(sd[key].shape) == shape, key


def test_googlenet_aux_heads_only_in_training():
    with torch.device("meta"):
        model = edgecnn.create_model("googlenet", aux_logits=True, num_classes=5)
    x = torch.zeros(2, 3, 224, 224, device="meta")
    logits, aux2, aux1 = model.train()(x)
    assert logits.shape == aux2.shape == aux1.shape == (2, 5)
    assert model.eval()(x).shape == (2, 5)


def test_inception_v3_aux_head_needs_299px_in_training():
    with torch.device("meta"):
        model = edgecnn.create_model("inception_v3", aux_logits=True, num_classes=5).train()
    out = model(torch.zeros(2, 3, 299, 299, device="meta"))
    assert out.logits.shape == out.aux_logits.shape == (2, 5)
    with pytest.raises(EdgeCNNError, match="at least 299 px"):
        model(torch.zeros(2, 3, 298, 298, device="meta"))
    assert model.eval()(torch.zeros(1, 3, 75, 75, device="meta")).shape == (1, 5)


def test_convnext_stochastic_depth_rises_linearly_to_the_papers_rate():
    with torch.device("meta"):
        model = edgecnn.create_model("convnext_small")
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == 36 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.4)
    assert rates == sorted(rates)


@pytest.mark.parametrize("build, message", [
    (lambda: VGG(dropout=1.0), "dropout must be a probability in [0, 1), got 1.0"),
    (lambda: AlexNet(dropout=-0.1), "dropout must be a probability in [0, 1)"),
    (lambda: DenseNet(drop_rate=2), "drop_rate must be a probability in [0, 1)"),
    (lambda: ConvNeXt(drop_path_rate=1.5), "drop_path_rate must be a probability in [0, 1)"),
    (lambda: ConvNeXt(layer_scale=0), "layer_scale must be > 0"),
    (lambda: edgecnn.create_model("googlenet", aux_logits="yes"),
     "aux_logits must be True or False, got 'yes'"),
    (lambda: edgecnn.create_model("inception_v3", aux_logits=1), "aux_logits must be True or False"),
    (lambda: edgecnn.create_model("resnet50", alpha=0.5), "resnet50 has no knob alpha (its knobs: none)"),
    (lambda: edgecnn.create_model("vgg16", dropout=0.1), "vgg16 has no knob dropout (its knobs: none)"),
    (lambda: edgecnn.create_model("googlenet", phi=1.0), "googlenet has no knob phi (its knobs: aux_logits)"),
])
def test_bad_knobs_raise_one_line(build, message):
    with pytest.raises(EdgeCNNError) as info:
        with torch.device("meta"):
            build()
    assert message in str(info.value) and "\n" not in str(info.value)


# torchvision's own model source (its wheel cannot be imported here: its compiled ops do not load
# with the CPU torch) is run as the reference: the same state_dict keys in the same order, shapes,
# strict loading of its state_dict, and identical outputs.
PARITY_SCRIPT = r"""
import importlib, json, sys, warnings
import torch
import edgecnn
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
results = {}
for name, module, ctor, kwargs, res in json.loads(sys.argv[2]):
    torch.manual_seed(0)
    tv = eval(ctor, {"m": importlib.import_module("torchvision.models." + module)}).eval()
    ours = edgecnn.create_model(name, **kwargs).eval()
    ref, got = tv.state_dict(), ours.state_dict()
    layout = list(ref) == list(got) and all(ref[k].shape == got[k].shape for k in ref)
    ours.load_state_dict(ref, strict=True)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        diff = float((tv(x) - ours(x)).abs().max())
    results[name + "-aux" * bool(kwargs)] = {"layout": layout, "diff": diff}
print(json.dumps(results))
"""
PARITY = [
    ("alexnet", "alexnet", "m.alexnet()", {}, 64),
    ("vgg11_bn", "vgg", "m.vgg11_bn()", {}, 32),
    ("googlenet", "googlenet", "m.GoogLeNet(aux_logits=True, init_weights=True)", {"aux_logits": True}, 64),
    ("inception_v3", "inception", "m.Inception3(aux_logits=True, init_weights=True)",
     {"aux_logits": True}, 75),
    ("resnet50", "resnet", "m.resnet50()", {}, 64),
    ("densenet121", "densenet", "m.densenet121()", {}, 64),
    ("convnext_tiny", "convnext", "m.convnext_tiny()", {}, 64),
]


@pytest.mark.slow
def test_same_layout_and_outputs_as_torchvision(torchvision_source):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PARITY_SCRIPT, str(torchvision_source),
                           json.dumps(PARITY)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(PARITY)
    for name, r in results.items():
        assert r["layout"] and r["diff"] < 1e-4, (name, r)  # same weights and ops in one process: rounding only
