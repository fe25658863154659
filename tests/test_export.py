"""edgecnn export: names, calibration sources, bad input, and real conversions through both back ends."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import edgecnn
from edgecnn.converters.base import Variant, variants
from edgecnn.converters.registry import BACKENDS
from edgecnn.converters.verify import compare
from edgecnn.data import calibration as calib_mod
from edgecnn.data.calibration import SyntheticCalibrationWarning, calibration_images
from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError
from edgecnn.models import canonical_name

PP = Preprocess(res=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- names -------------------------------------------------------------------------------------

def test_canonical_name_formats_knobs_and_res():
    m = edgecnn.create_model("mobilenet", alpha=0.5)
    assert canonical_name(m.edgecnn_config, 160) == "mobilenet_v1_0.50_160"
    assert canonical_name(edgecnn.create_model("squeezenet1_1").edgecnn_config, 224) == "squeezenet1_1_224"


def test_file_suffixes_say_exactly_what_the_file_is():
    got = [v.suffix for v in variants(["int8", "dynamic", "float16", "float32"], ["int8", "uint8", "float32"])]
    assert got == ["float32", "float16", "dynamic_int8", "int8", "int8_uint8io", "int8_int8io"]
    assert Variant("dynamic").suffix != "int8"


def test_relative_error_is_relative_to_the_largest_logit():
    ref = np.array([[10.0, -20.0, 0.001]])
    assert compare(ref + np.array([[0.0, 0.0, 0.02]]), ref)["max_rel_error"] == pytest.approx(0.001)
    assert compare(ref, ref) == {"max_rel_error": 0.0, "top1_agreement": 1.0, "cosine": pytest.approx(1.0)}


def test_logits_that_do_not_vary_across_images_count_as_constant():
    from edgecnn.converters.verify import is_constant

    rng = np.random.default_rng(0)
    diverged = rng.normal(size=(1, 10)) * 300 + rng.normal(size=(24, 10)) * 1e-4  # like a diverged LeNet-5
    assert is_constant(diverged) and is_constant(np.zeros((24, 10)))
    # tiny but input-dependent logits are judged (variation ~1 of the largest logit; the bound is 1e-3)
    assert not is_constant(rng.normal(size=(24, 10)) * 1e-12)


# --- options as data ---------------------------------------------------------------------------

BAD_OPTIONS = [
    ({"precisions": "float32,int4"}, "--quantize takes a comma list of float32, float16, dynamic, int8; got 'int4'"),
    ({"ios": ""}, "--io takes a comma list of float32, uint8, int8; got 'nothing'"),
    ({"layout": "chw"}, "--layout takes a comma list of nhwc, nchw; got 'chw'"),
    ({"converter": "tflite"}, "--converter takes a comma list of litert, onnx2tf; got 'tflite'"),
    ({"scores": "probs"}, "--scores takes a comma list of softmax, logits; got 'probs'"),
    ({"calib_samples": 0}, "--calib-samples must be an integer >= 1, got 0"),
    ({"calib_samples": True}, "--calib-samples must be an integer >= 1, got True"),
    ({"calib_method": "magic"}, "--calib-method takes one of minmax, percentile, histogram; got 'magic'"),
    ({"converter": "onnx2tf", "calib_method": "minmax"}, "--calib-method is not a choice of the onnx2tf back end"),
    ({"calib_samples": 8}, "--calib-method percentile needs --calib-samples >= 32, got 8"),
    ({"pixel_input": False, "ios": "uint8"}, "--io uint8 files take camera bytes, so they need --input pixels"),
    ({"calib_data": "{tmp}/nowhere"}, "does not exist or is not a directory"),
    ({"out": "{tmp}/file"}, "exists and is not a folder"),
]


@pytest.mark.parametrize("kwargs, message", BAD_OPTIONS, ids=[str(k) for k, _ in BAD_OPTIONS])
def test_export_options_refuse_bad_values_in_one_line_when_made(tmp_path, kwargs, message):
    from edgecnn.pipelines.export import ExportOptions

    (tmp_path / "file").write_text("x")
    kwargs = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(EdgeCNNError) as info:
        ExportOptions(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EdgeCNNError) as same:  # the same check, once, for keyword callers
        edgecnn.export("mobilenet", **kwargs, progress=False)
    assert str(same.value) == str(info.value)


def test_export_options_normalise_lists_and_take_the_back_ends_default_method():
    from edgecnn.pipelines.export import ExportOptions, export_request

    opts = ExportOptions(precisions="INT8, float32,int8", ios=["uint8"], calib_samples=8, calib_method="minmax")
    assert opts.precisions == ("int8", "float32") and opts.ios == ("uint8",) and opts.int8_method == "minmax"
    assert ExportOptions().int8_method == "percentile" and ExportOptions(converter="onnx2tf").int8_method is None
    request, merged = export_request("mobilenet", opts, quantize="float32", alpha=0.5, res=96)
    assert merged.precisions == ("float32",) and merged.ios == ("uint8",)  # keywords override options
    assert dict(request.knobs) == {"alpha": 0.5} and request.res == 96 and request.model == "mobilenet"


def test_unknown_knob_is_the_registrys_one_line_error(cli, tmp_path):
    with pytest.raises(EdgeCNNError, match=r"^mobilenet_v1 has no knob aux_logits \(its knobs: alpha\)$"):
        edgecnn.export("mobilenet", aux_logits=True, res=64, out=tmp_path / "x", progress=False)
    r = cli("export", "mobilenet", "--aux-logits", "--res", "64", "--out", tmp_path / "y")
    assert r.code == 2 and _one_error_line(r.err, "mobilenet_v1 has no knob aux_logits (its knobs: alpha)"), r
    assert leftovers(tmp_path) == []


def test_every_models_knobs_reach_the_built_model_and_its_name():
    from edgecnn.pipelines.export import ModelRequest, build_model

    built = build_model(ModelRequest("googlenet", knobs={"aux_logits": True}, res=64))
    assert built.config.knobs == {"aux_logits": True} and built.name == "googlenet_aux_logitsTrue_64"
    assert hasattr(built.model, "aux1")  # the auxiliary classifiers exist
    assert build_model(ModelRequest("googlenet", res=64)).name == "googlenet_64"  # default: not in the name
    assert build_model(ModelRequest("efficientnet", knobs={"phi": 0.5}, res=64)).name == "efficientnet_phi0.50_64"
    with pytest.raises(EdgeCNNError, match="knobs cannot change"):  # a built model keeps its knobs
        build_model(ModelRequest(built.model, knobs={"aux_logits": False}))


def test_knob_flags_are_generated_for_every_tunable_knob_of_the_registry():
    from edgecnn.cli import build_parser
    from edgecnn.cli.common import model_knobs
    from edgecnn.limits import KNOBS
    from edgecnn.models.registry import tunable_knobs

    knobs = tunable_knobs()
    assert {"alpha", "phi", "aux_logits"} <= set(knobs) and "googlenet" in knobs["aux_logits"]["models"]
    sub = next(a for a in build_parser()._actions if a.choices and "export" in a.choices)
    for command in ("info", "train", "export", "quantize"):
        flags = {a.dest: a for a in sub.choices[command]._actions}
        for name, knob in knobs.items():
            action = flags[name]
            assert f"--{name.replace('_', '-')}" in action.option_strings and action.default is None
            assert all(m in action.help for m in knob["models"]), action.help
            if not isinstance(knob["default"], bool):
                assert action.type.bound is KNOBS[name]  # the bound of edgecnn.limits
    parser = build_parser()
    assert model_knobs(parser.parse_args(["export", "googlenet", "--aux-logits"])) == {"aux_logits": True}
    assert model_knobs(parser.parse_args(["export", "googlenet", "--no-aux-logits"])) == {"aux_logits": False}
    assert model_knobs(parser.parse_args(["export", "mobilenet", "--alpha", "0.5"])) == {"alpha": 0.5}
    assert model_knobs(parser.parse_args(["export", "mobilenet"])) == {}


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_aux_logits_reach_the_export_from_the_cli(cli, tmp_path):
    r = cli("export", "googlenet", "--aux-logits", "--res", "32", "--quantize", "float32", "--no-verify",
            "--no-latency", "--out", tmp_path / "g", "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    plain = edgecnn.create_model("googlenet")
    assert report["knobs"] == {"aux_logits": True} and report["name"] == "googlenet_aux_logitsTrue_32"
    assert report["params"] > sum(p.numel() for p in plain.parameters())  # the auxiliary heads are counted
    assert (tmp_path / "g" / "googlenet_aux_logitsTrue_32_float32.tflite").is_file()


# --- calibration sources -----------------------------------------------------------------------

def _write_images(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_calib_folder_with_class_subfolders_skips_unreadable(tmp_path):
    _write_images(tmp_path / "cats", 3)
    _write_images(tmp_path / "dogs", 3, seed=1)
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image")
    got = calibration_images(PP, 10, calib_data=tmp_path)
    assert got.pixels.shape == (6, 64, 64, 3) and got.pixels.dtype == np.uint8
    assert got.kind == "folder" and got.skipped == 1 and "broken.jpg" in got.source


def test_calib_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(EdgeCNNError, match="does not exist"):
        calibration_images(PP, 4, calib_data=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeCNNError, match="no image files"):
        calibration_images(PP, 4, calib_data=tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.raises(EdgeCNNError, match=r"first bad file: .*a\.png"):
        calibration_images(PP, 4, calib_data=tmp_path / "bad")


def test_calibration_defaults_to_real_photos_then_loud_synthetic(monkeypatch):
    got = calibration_images(PP, 20)
    assert got.kind == "photos" and got.pixels.shape == (20, 64, 64, 3) and "real photos" in got.source
    monkeypatch.setattr(calib_mod, "sample_photos", lambda *a, **k: [])
    with pytest.warns(SyntheticCalibrationWarning, match="UNKNOWN"):
        got = calibration_images(PP, 4)
    assert got.kind == "synthetic" and got.pixels.std() > 10  # structured images, not a constant


def test_checkpoint_training_folder_is_preferred_over_photos(tmp_path):
    _write_images(tmp_path / "train" / "a", 2)
    got = calibration_images(PP, 4, checkpoint_data=str(tmp_path / "train"))
    assert got.kind == "checkpoint" and len(got.pixels) == 2
    got = calibration_images(PP, 4, checkpoint_data="no-such-dataset")
    assert got.kind == "photos" and "'no-such-dataset' is not usable here" in got.source


def test_checkpoint_dataset_folder_calibrates_from_its_images(tmp_path):
    from edgecnn.data.datasets import subset_folder
    from edgecnn.data.datasets import fashion_mnist_dirs, is_idx_folder

    if not any(is_idx_folder(d) for d in fashion_mnist_dirs()):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    idx = subset_folder(tmp_path / "fmnist", 64, 16)  # an IDX folder: no image files in it
    pre = Preprocess(res=32, mean=(0.286,), std=(0.353,), crop_pct=1.0, in_chans=1)
    got = calibration_images(pre, 8, checkpoint_data=str(idx))
    assert got.kind == "checkpoint" and got.pixels.shape == (8, 32, 32, 1)
    assert got.pixels.std() > 10  # real garment images, not a blank fill


# --- bad input: one line, exit 2, nothing left behind -------------------------------------------

def _one_error_line(err: str, message: str) -> bool:
    """Exactly one ``edgecnn: error:`` line, the last one, holding ``message``; no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("edgecnn: error:")]
    return len(errors) == 1 and lines[-1] == errors[0] and message in errors[0] and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["mobilenett"], "unknown model 'mobilenett'; did you mean"),
    (["mobilenet", "--res", "8"], "at least"),
    (["mobilenet", "--alpha", "0.25", "--calib-data", "{tmp}/nowhere"], "does not exist"),
    (["mobilenet", "--alpha", "0.25", "--calib-data", "{tmp}/empty"], "no image files"),
    (["mobilenet", "--alpha", "0.25", "--quantize", "int4"], "--quantize takes"),
    (["mobilenet", "--alpha", "0.25", "--weights", "{tmp}/corrupt.pth"], "corrupt.pth"),
])
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(cli, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02 this is not a checkpoint")
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path) for a in args]
    argv += [] if "--res" in argv else ["--res", "64"]
    r = cli("export", *argv, "--out", str(out))
    assert r.code == 2, r
    assert _one_error_line(r.err, message)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_impossible_alpha_is_rejected(cli):
    r = cli("export", "mobilenet", "--alpha", "0")
    assert r.code == 2 and r.err.count("\n") == 1 and "must be a number in (0, 4], got 0 (published values" in r.err


def test_unwritable_output_folder(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("export", "mobilenet", "--alpha", "0.25", "--res", "64", "--out", str(blocker / "sub"))
    assert r.code == 2 and _one_error_line(r.err, "cannot write")


def test_interrupt_leaves_no_partial_folder(monkeypatch, tmp_path):
    class Interrupting:
        def convert(self, job, wanted):
            (Path(job.scratch) / "half.tflite").write_bytes(b"x")
            raise KeyboardInterrupt

    monkeypatch.setitem(BACKENDS, "litert", dataclasses.replace(BACKENDS["litert"], load=Interrupting))
    out = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):
        edgecnn.export("mobilenet", alpha=0.25, res=64, out=out, progress=False)
    assert leftovers(tmp_path) == []


def test_ctrl_c_swallowed_by_a_converter_still_stops_the_export(monkeypatch, tmp_path, catchable_signals):
    import os
    import signal

    class Swallowing:  # some converter internals catch KeyboardInterrupt and carry on
        def convert(self, job, wanted):
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except BaseException:
                pass
            return [], {}

    monkeypatch.setitem(BACKENDS, "litert", dataclasses.replace(BACKENDS["litert"], load=Swallowing))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        edgecnn.export("mobilenet", alpha=0.25, res=64, out=tmp_path / "exp", progress=False)
    assert leftovers(tmp_path) == [] and signal.getsignal(signal.SIGINT) is before


# --- real conversions ----------------------------------------------------------------------------

def _by_suffix(report) -> dict[str, dict]:
    return {f["suffix"]: f for f in report.files}


def _assert_really_int8(f: dict, io: str) -> None:
    """Integer weights only, no float conv/FC left, and the I/O type asked for."""
    assert f["inputs"][0]["dtype"] == io and f["outputs"][0]["dtype"] == io, f["inputs"]
    assert "FLOAT32" not in f["constant_types"] and f["constant_types"].get("INT8", 0) > 0, f["constant_types"]
    assert not [op for op in f["float_op_names"] if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_litert_every_precision_and_interface(tmp_path):
    out = tmp_path / "v1"
    report = edgecnn.export("mobilenet", alpha=0.25, res=128, quantize="float32,float16,dynamic,int8",
                            io="float32,uint8,int8", calib_samples=32, out=out, progress=False)
    files = _by_suffix(report)
    assert set(files) == {"float32", "float16", "dynamic_int8", "int8", "int8_uint8io", "int8_int8io"}
    assert files["float32"]["verification"]["max_rel_error"] <= 1e-3  # float32 rounding: ~1e-6, 1000x margin
    assert files["float16"]["verification"]["passed"] and files["float16"]["constant_types"].get("FLOAT16")
    assert files["float32"]["inputs"][0]["shape"] == [1, 128, 128, 3]  # NHWC by default
    for suffix, io in (("int8", "float32"), ("int8_uint8io", "uint8"), ("int8_int8io", "int8")):
        _assert_really_int8(files[suffix], io)
        assert files[suffix]["inspected_precision"] == "int8"  # MobileNetV1 has no residual adds
        assert files[suffix]["bytes"] < files["float32"]["bytes"] / 3
    uint8_in = files["int8_uint8io"]["inputs"][0]
    # camera bytes: the range of integer pixel values (min/max, no sums), so scale ~1
    assert uint8_in["scale"] == pytest.approx(1.0, abs=0.02) and abs(uint8_in["zero_point"]) <= 2
    assert files["dynamic_int8"]["constant_types"].get("INT8")
    written = leftovers(out)
    assert {"labels.txt", "report.json"} <= set(written) and not [n for n in written if n.endswith(".onnx")]
    assert json.loads((out / "report.json").read_text())["files"][0]["name"] == "mobilenet_v1_0.25_128_float32.tflite"
    assert report.warnings and "random weights" in report.warnings[0]


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_mediapipe_classifies_like_edgecnn_with_real_weights(tmp_path, mobilenet_v2_imagenet_file):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.data.photos import sample_photos

    out = tmp_path / "v2"
    report = edgecnn.export("mobilenet_v2", weights=str(mobilenet_v2_imagenet_file), res=128, io="uint8",
                            calib_samples=32, out=out, progress=False, measure=False)
    files = _by_suffix(report)
    assert report.trained and files["int8_uint8io"]["verification"]["passed"]
    _assert_really_int8(files["int8_uint8io"], "uint8")
    pp = Preprocess(**report.preprocess)
    photos = sample_photos()[:6]
    pixels = np.stack([pp.to_uint8(p) for p in photos])
    for suffix in ("float32", "int8_uint8io"):
        path = out / files[suffix]["name"]
        ours = TFLiteModel(path).predict_pixels(pixels, pp)
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for image, scores in zip(pixels, ours):
                top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image)).classifications[0]
                best = np.flatnonzero(scores == scores.max())  # int8 probabilities (k/256) can tie at the top
                assert top.categories[0].index in best, (suffix, top.categories[0], best)


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_random_weight_int8_export_reports_real_agreement(tmp_path):
    """Random MobileNetV1 logits are O(0.1) in eval mode (were 1e-16, and the int8 file answered zeros):
    int8 is measured, not judged, for random weights, and the numbers are real."""
    report = edgecnn.export("mobilenet", alpha=0.25, res=64, num_classes=10, quantize="int8", calib_samples=32,
                            out=tmp_path / "r", progress=False, measure=False)
    v = report.files[0]["verification"]
    # measured 0.993: int8 rounding sets it (float summation order moves the reference by ~1e-6)
    assert v["status"] == "not judged: random weights" and v["cosine"] > 0.9, v


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_onnx2tf_float32_and_uint8_int8(tmp_path):
    out = tmp_path / "o"
    report = edgecnn.export("mobilenet", alpha=0.25, res=128, converter="onnx2tf", io="float32,uint8",
                            calib_samples=16, out=out, progress=False)
    files = _by_suffix(report)
    assert files["float32"]["verification"]["max_rel_error"] <= 1e-3  # float32 rounding: ~1e-6, 1000x margin
    assert files["float32"]["inputs"][0]["shape"] == [1, 128, 128, 3]
    _assert_really_int8(files["int8"], "float32")
    _assert_really_int8(files["int8_uint8io"], "uint8")
    assert files["int8_uint8io"]["inputs"][0]["scale"] == pytest.approx(1.0, abs=0.02)
    assert "mobilenet_v1_0.25_128.onnx" in leftovers(out)


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
@pytest.mark.parametrize("converter", ["litert", "onnx2tf"])
def test_softmax_scores_inside_every_file_and_int8_softmax_on_tflites_fixed_range(tmp_path, converter):
    from edgecnn.converters.metadata import read_metadata
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.data.photos import sample_photos

    out = tmp_path / "s"
    report = edgecnn.export("mobilenet", alpha=0.25, res=64, quantize="float32,int8", io="int8",
                            converter=converter, calib_samples=32, out=out, progress=False, measure=False)
    assert report.scores == "softmax" and json.loads((out / "report.json").read_text())["scores"] == "softmax"
    files = _by_suffix(report)
    for f in files.values():
        assert f["ops"].get("SOFTMAX") == 1, f["ops"]
        assert f["precision"] == "float32" or "SOFTMAX" not in f["float_op_names"], f["float_op_names"]
        assert read_metadata((out / f["name"]).read_bytes())["scores"] == "softmax"
    # TFLite's int8 SOFTMAX kernel: output scale 1/256, zero point -128 (probabilities 0..255/256)
    q = files["int8_int8io"]["outputs"][0]
    assert q["dtype"] == "int8" and q["scale"] == pytest.approx(1 / 256) and q["zero_point"] == -128
    pp = Preprocess(**report.preprocess)
    pixels = np.stack([pp.to_uint8(p) for p in sample_photos()[:4]])
    probs = TFLiteModel(out / files["float32"]["name"]).predict_pixels(pixels, pp)
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # float32 rounding of 1000 terms
    v = files["float32"]["verification"]  # against the same softmax wrapper in PyTorch
    assert v["passed"] and v["max_rel_error"] <= 1e-3


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_logits_scores_leave_the_classifier_as_it_is(tmp_path):
    from edgecnn.converters.metadata import read_metadata

    report = edgecnn.export("mobilenet", alpha=0.25, res=64, quantize="float32", scores="logits",
                            out=tmp_path / "l", progress=False, measure=False)
    f = report.files[0]
    assert report.scores == "logits" and "SOFTMAX" not in f["ops"] and f["verification"]["passed"]
    assert read_metadata((tmp_path / "l" / f["name"]).read_bytes())["scores"] == "logits"


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_eval_of_a_softmax_file_reports_the_checkpoints_loss(fmnist_small, tmp_path, cli):
    """eval reads the file's metadata: probabilities go through log before the cross-entropy."""
    from edgecnn.train import TrainConfig, train
    from edgecnn.train.trainer import LAST

    run = tmp_path / "run"
    train(TrainConfig(model="mobilenet_v1", knobs={"alpha": 0.25}, data=str(fmnist_small), out=str(run),
                      epochs=1, batch_size=32, optimizer="sgd", lr=0.05, warmup_epochs=0.3, val_split=0.7,
                      workers=0), progress=False)
    report = edgecnn.export(run / LAST, quantize="float32", out=tmp_path / "e", progress=False, measure=False)
    assert report.scores == "softmax"
    tflite = cli("eval", report.files[0]["path"], "--data", fmnist_small, "--workers", "0", "--json")
    ckpt = cli("eval", run / LAST, "--workers", "0", "--json")
    assert tflite.code == 0 and ckpt.code == 0, (tflite, ckpt)
    got, want = json.loads(tflite.out), json.loads(ckpt.out)
    assert got["images"] == want["images"] == 300 and abs(got["top1"] - want["top1"]) <= 1 / 300
    # the same model in float32: only summation order differs (a loss of ~1-2 to within 1e-3, 100x margin)
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-3)


def test_scores_takes_softmax_or_logits_and_a_qat_graph_only_logits(tmp_path):
    with pytest.raises(EdgeCNNError, match="--scores takes a comma list of softmax, logits; got 'probs'"):
        edgecnn.export("mobilenet", alpha=0.25, res=64, scores="probs", out=tmp_path / "x", progress=False)

    class Ready:  # stands in for a QAT QuantizedModel: only its layout is looked at first
        layout = "nhwc"

    with pytest.raises(EdgeCNNError, match="outputs logits"):
        edgecnn.export("mobilenet", alpha=0.25, res=64, quantized=Ready(), out=tmp_path / "x", progress=False)
    assert leftovers(tmp_path) == []


MODELS = [("mobilenet_v1", {"alpha": 0.5}, 96), ("mobilenet_v2", {"alpha": 0.35}, 64), ("squeezenet1_1", {}, 64),
          ("efficientnet_lite0", {}, 64), ("resnet18", {}, 64)]


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
@pytest.mark.parametrize("converter", ["litert", "onnx2tf"])
@pytest.mark.parametrize("name, knobs, res", MODELS, ids=[m[0] for m in MODELS])
def test_float32_equals_pytorch(tmp_path, converter, name, knobs, res):
    if name not in edgecnn.list_models():
        pytest.skip(f"{name} is not registered in this checkout")
    report = edgecnn.export(name, **knobs, res=res, quantize="float32", converter=converter,
                            out=tmp_path / "f", progress=False, measure=False)
    v = report.files[0]["verification"]
    # float32 rounding moves logits by ~1e-6 of the largest: 1000x below the bound, and flips only exact ties
    assert v["passed"] and v["max_rel_error"] <= 1e-3 and v["top1_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_checkpoint_export_rerun_overwrites_and_failed_check_exits_1(cli, tmp_path, monkeypatch):
    from edgecnn.checkpoint import CheckpointMeta, save_checkpoint

    model = edgecnn.create_model("mobilenet_v2", alpha=0.35, num_classes=3)
    pp = Preprocess(res=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, CheckpointMeta(
        model="mobilenet_v2", knobs={"alpha": 0.35}, num_classes=3, in_chans=3, preprocess=pp,
        labels=["cat", "dog", "bird"]))
    out = tmp_path / "o"
    r = cli("export", ckpt, "--quantize", "float32,float16", "--out", out, "--no-latency", "--c-array", "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report["res"] == 64 and report["num_classes"] == 3 and report["preprocess"]["mean"] == [0.5] * 3
    assert (out / "labels.txt").read_text().split() == ["cat", "dog", "bird"]
    assert {"mobilenet_v2_0.35_64_float16.tflite", "model_data.h", "model_data.cc"} <= set(leftovers(out))
    from edgecnn.converters import verify

    monkeypatch.setitem(verify.CHECKS, "float32", [("max_rel_error", 0.0, "max")])
    # raw logits: a random model's softmax can be exactly uniform in both, an error of exactly 0
    r = cli("export", ckpt, "--quantize", "float32", "--scores", "logits", "--out", out, "--no-latency", "--json")
    assert r.code == 1 and "mobilenet_v2_0.35_64_float32.tflite failed verification: max_rel_error" in r.err
    assert json.loads(r.out)["files"][0]["verification"]["passed"] is False
    assert set(leftovers(out)) == {"mobilenet_v2_0.35_64_float32.tflite", "labels.txt", "report.json"}


def test_conversion_failure_names_back_end_op_and_alternative(monkeypatch, tmp_path):
    from edgecnn.converters import litert

    def broken(module, sample):
        raise RuntimeError("Lowering failed: no rule for aten.grid_sampler_2d.default\nlong trace ...")

    monkeypatch.setattr(litert, "_convert", broken)
    with pytest.raises(EdgeCNNError) as info:
        edgecnn.export("mobilenet", alpha=0.25, res=64, quantize="float32", out=tmp_path / "x", progress=False)
    msg = str(info.value)
    assert msg.startswith("litert back end (litert-torch) failed while converting the float32 model")
    assert "aten.grid_sampler_2d.default" in msg and "--converter onnx2tf" in msg and "\n" not in msg
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_a_model_with_constant_output_is_not_judged(cli, tmp_path):
    """A diverged model answers every image alike: its files are neither "ok" nor failed (exit 0)."""
    import torch

    from edgecnn.checkpoint import CheckpointMeta, save_checkpoint

    model = edgecnn.create_model("lenet5")
    torch.nn.init.zeros_(model.c1[0].weight)  # the input never reaches the logits
    pp = Preprocess(res=32, mean=(0.5,), std=(0.5,), crop_pct=1.0, in_chans=1)
    ckpt = save_checkpoint(tmp_path / "flat.ckpt", model, CheckpointMeta(
        model="lenet5", knobs={}, num_classes=10, in_chans=1, preprocess=pp, labels=[str(i) for i in range(10)]))
    r = cli("export", ckpt, "--quantize", "float32,int8", "--out", tmp_path / "o", "--no-latency")
    assert r.code == 0, r
    assert r.out.count("not judged: constant output") == 2 and " ok" not in r.out, r.out
    assert "WARNING: the float model gives the same output for all 24 verification images" in r.out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [f["verification"]["status"] for f in report["files"]] == ["not judged: constant output"] * 2
