"""The registry, knob validation and CLI errors: one clear line, exit 2, no traceback."""

import json

import pytest
import torch

import edgecnn
from edgecnn.errors import EdgeCNNError


def test_every_registered_model_builds_on_meta_and_reports_stats(zoo_rows):
    assert [r["name"] for r in zoo_rows] == edgecnn.list_models()
    for r in zoo_rows:
        assert r["params"] > 0 and r["macs"] > 0 and r["peak_activation_bytes"] > 0, r["name"]
        assert r["weight_bytes"]["fp32"] == 4 * r["weight_bytes"]["int8"]
        assert r["input_shape"] == [1, r["in_chans"], r["default_res"], r["default_res"]]


def test_create_model_records_its_config():
    m = edgecnn.create_model("mobilenet_v2", alpha=0.75, num_classes=10, in_chans=1)
    cfg = m.edgecnn_config
    assert (cfg.name, cfg.num_classes, cfg.in_chans, cfg.knobs["alpha"]) == ("mobilenet_v2", 10, 1, 0.75)
    assert len(cfg.mean) == 1
    out = m.eval()(torch.zeros(2, 1, 96, 96))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes must be an integer in [1, 100000], got 0"),
    ({"in_chans": 0}, "in_chans must be an integer in [1, 4], got 0"),
    ({"alpha": 0}, "alpha (width multiplier) must be a number in (0, 4]"),
    ({"alpha": -1.0}, "alpha (width multiplier) must be a number in (0, 4]"),
    ({"alpha": 1e9}, "alpha (width multiplier) must be a number in (0, 4]"),
    ({"phi": 1.0}, "has no knob phi"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(EdgeCNNError, match=None) as info:
        edgecnn.create_model("mobilenet_v2", **kwargs)
    assert message in str(info.value)


def test_unknown_model_suggests_close_names(cli):
    r = cli("info", "mobilenetv3")
    assert r.code == 2
    assert "unknown model 'mobilenetv3'; did you mean" in r.err
    assert "mobilenetv2" in r.err or "mobilenet_v2" in r.err
    assert "Traceback" not in r.err and r.err.count("\n") == 1


def test_resolution_below_minimum_is_one_line(cli):
    r = cli("info", "mobilenet_v2", "--res", "8")
    assert r.code == 2 and "at least 32x32" in r.err and r.err.count("\n") == 1


def test_info_json_is_one_object(cli):
    r = cli("info", "mobilenet_v2", "--alpha", "0.5", "--res", "160", "--json")
    assert r.code == 0
    info = json.loads(r.out)
    assert info["name"] == "mobilenet_v2" and info["res"] == 160 and info["knobs"]["alpha"] == 0.5
    assert info["input_shape"] == [1, 3, 160, 160]
    assert info["params"] > 1_000_000 and info["macs"] > 10_000_000


def test_models_lists_a_family_and_rejects_unknown_ones(cli):
    r = cli("models", "--family", "mobilenet_v1", "--json")
    assert r.code == 0
    names = [m["name"] for m in json.loads(r.out)["models"]]
    assert names == edgecnn.list_models("mobilenet_v1") and names
    r = cli("models", "--family", "mobilenet_v9")
    assert r.code == 2 and "no family 'mobilenet_v9'" in r.err
