"""TFLite metadata proven with a real third-party client: MediaPipe Tasks' ImageClassifier.

torchvision's ImageNet MobileNetV2 (real weights) at 224x224 is converted into a
float32 NHWC file and a full-int8 file with uint8 camera-byte I/O by the export's litert-torch back
end; both take raw pixels (normalisation inside the graph, as MediaPipe needs). With edgecnn's metadata,
MediaPipe loads both files as they are and returns, on real photos, the same top-1 class, label
and score as edgecnn's own runner; without it, MediaPipe refuses the float file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgecnn
from edgecnn.converters.inspect import inspect_tflite_safe
from edgecnn.converters.metadata import add_metadata, pixel_input_normalization, read_metadata
from edgecnn.converters.tflite_runtime import TFLiteModel
from edgecnn.data.photos import photo_paths
from edgecnn.data.transforms import Preprocess, load_image
from edgecnn.errors import EdgeCNNError
from edgecnn.labels import imagenet_labels

RES = 224
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")
# What torchvision's MobileNetV2 weights see in them (../shared/NOTES.md): Egyptian cat, espresso, space shuttle
EXPECTED_FLOAT_TOP1 = {"chelsea.png": 285, "coffee.png": 967, "rocket.jpg": 812}
# one xdist worker builds the module's converted models once (tests/run.sh uses --dist loadgroup)
pytestmark = pytest.mark.xdist_group("mv2_mediapipe")
# |sum - 1| of an int8 file's probabilities: each is a multiple of 1/256 and most of the 1000 round
# to 0; measured <= 0.012 on the three photos (0.996, 0.996, 0.988), so 0.05 leaves a 4x margin
INT8_SUM_TOLERANCE = 0.05


def _meta(model_bytes: bytes, **overrides) -> bytes:
    mean, std = pixel_input_normalization(3)
    kwargs = dict(labels=imagenet_labels(), mean=mean, std=std, in_chans=3, name="mobilenet_v2_1.00_224",
                  description="MobileNetV2 1.0, ImageNet, raw RGB pixels in", version="1")
    kwargs.update(overrides)
    return add_metadata(model_bytes, **kwargs)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Real photos, resized and centre-cropped to 224x224 RGB uint8 (torchvision's eval recipe)."""
    pre = Preprocess(RES, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    paths = {p.name: p for p in photo_paths()}
    if not all(name in paths for name in PHOTOS):
        pytest.skip("scikit-image's sample photos are not installed")
    return {name: pre.to_uint8(load_image(paths[name])) for name in PHOTOS}


@pytest.fixture(scope="module")
def mv2(mobilenet_v2_imagenet_file, tmp_path_factory):
    """(torch model, preprocess, {kind: bytes without metadata}) for the float32 and int8-uint8io files
    with softmax scores (the export's default) and a float32 file with raw logits, made by the
    export's litert-torch back end (pixel input, NHWC)."""
    from edgecnn.converters.base import ConvertJob, Variant
    from edgecnn.converters.litert import LiteRTConverter
    from edgecnn.data.photos import sample_photos

    model = edgecnn.create_model("mobilenet_v2", weights=str(mobilenet_v2_imagenet_file)).eval()
    pre = Preprocess.for_model(model, RES)
    calib = np.stack([pre.to_uint8(im) for im in sample_photos(8, seed=1)])
    files = {}
    for scores, wanted in (("softmax", [Variant("float32"), Variant("int8", "uint8")]),
                           ("logits", [Variant("float32")])):
        job = ConvertJob(model=model, preprocess=pre, layout="nhwc", calib_pixels=calib, pixel_input=True,
                         scratch=tmp_path_factory.mktemp("convert"), calib_method="minmax",  # 8 images suffice
                         scores=scores)
        converted, _ = LiteRTConverter().convert(job, wanted)
        files.update({c.variant.suffix + ("_logits" if scores == "logits" else ""): c.data for c in converted})
    return model, pre, files


def _classifier(path, max_results: int = 1):
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=max_results)
    return vision.ImageClassifier.create_from_options(options)


def _categories(classifier, pixels: np.ndarray) -> list:
    """MediaPipe's categories for one HWC uint8 RGB image, best first."""
    import mediapipe as mp

    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
    return classifier.classify(image).classifications[0].categories


def _mediapipe_top1(classifier, pixels: np.ndarray) -> tuple[int, str | None, float]:
    top = _categories(classifier, pixels)[0]
    return top.index, top.category_name, top.score


def _scores(kind: str) -> str:
    return "logits" if kind.endswith("_logits") else "softmax"


def _with_metadata(files: dict, kind: str, folder: Path) -> Path:
    """The ``kind`` file with its metadata (scores as converted) written to ``folder``."""
    path = folder / f"mobilenet_v2_{kind}.tflite"
    path.write_bytes(_meta(files[kind], scores=_scores(kind)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float32", "int8_uint8io", "float32_logits"])
def test_mediapipe_agrees_with_edgecnn_runner(mv2, photos, kind, tmp_path):
    model, pre, files = mv2
    path = _with_metadata(files, kind, tmp_path)
    labels = imagenet_labels()
    runner = TFLiteModel(path)
    assert runner.inputs[0].dtype == (np.uint8 if kind == "int8_uint8io" else np.float32)
    assert runner.metadata["labels"] == labels and runner.layout == "NHWC"
    classifier = _classifier(path)
    for name, pixels in photos.items():
        index, label, score = _mediapipe_top1(classifier, pixels)
        logits = runner.predict_pixels(pixels)[0]
        ours = int(logits.argmax())
        print(f"{kind} {name}: MediaPipe {index} {label!r} {score:.3f} | edgecnn {ours} "
              f"{labels[ours]!r} {logits[ours]:.3f}")
        # the same file through two runners on one CPU: only their float32 rounding differs (~1e-6)
        assert index == ours and label == labels[ours]
        assert score == pytest.approx(float(logits[ours]), rel=1e-4, abs=1e-3)
        if kind != "int8_uint8io":  # the file is the PyTorch model: same class as torch on the same pixels
            torch_top1 = int(model(pre.normalize(pixels)).argmax())
            assert ours == torch_top1 == EXPECTED_FLOAT_TOP1[name]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float32", "int8_uint8io", "float32_logits"])
def test_mediapipe_scores_are_probabilities_with_softmax_and_logits_otherwise(mv2, photos, kind, tmp_path):
    path = _with_metadata(mv2[2], kind, tmp_path)
    assert read_metadata(path.read_bytes())["scores"] == _scores(kind)
    classifier = _classifier(path, max_results=-1)
    for name, pixels in photos.items():
        scores = np.array([c.score for c in _categories(classifier, pixels)])
        print(kind, name, len(scores), scores.min(), scores.max(), scores.sum())
        assert len(scores) == 1000, (name, len(scores))
        if _scores(kind) == "logits":  # raw logits: MobileNetV2's top one on these photos is ~10-20
            assert scores.max() > 5 and scores.min() < 0, (name, scores.max(), scores.min())
            continue
        assert scores.min() >= 0 and scores.max() <= 1, (name, scores.min(), scores.max())
        tolerance = 1e-4 if kind == "float32" else INT8_SUM_TOLERANCE  # float32: rounding of 1000 terms
        assert abs(scores.sum() - 1.0) <= tolerance, (name, scores.sum())


@pytest.mark.slow
def test_mediapipe_needs_the_metadata(mv2, photos, tmp_path):
    _, _, files = mv2
    bare = tmp_path / "float32_bare.tflite"
    bare.write_bytes(files["float32"])
    with pytest.raises(Exception, match="NormalizationOptions"):
        _classifier(bare)
    per_channel = tmp_path / "float32_per_channel.tflite"  # valid metadata, but MediaPipe wants one mean/std
    per_channel.write_bytes(_meta(files["float32"], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    with pytest.raises(Exception, match="[Pp]er-channel"):
        _classifier(per_channel)
    bare_u8 = tmp_path / "uint8_bare.tflite"  # runs on bytes, but has no class names without metadata
    bare_u8.write_bytes(files["int8_uint8io"])
    _, label, _ = _mediapipe_top1(_classifier(bare_u8), photos["chelsea.png"])
    assert not label


@pytest.mark.slow
def test_metadata_round_trip_and_packing(mv2):
    _, _, files = mv2
    for kind, data in files.items():
        out = _meta(data)
        md = read_metadata(out)
        assert md["labels"] == imagenet_labels() and md["labels_file"] == "labels.txt"
        assert md["name"] == "mobilenet_v2_1.00_224" and md["version"] == "1"
        assert (md["author"], md["license"]) == ("edgecnn", "Apache-2.0")
        assert md["color_space"] == "RGB" and md["min_parser_version"] == "1.0.0"
        np.testing.assert_allclose(md["mean_255"], [0, 0, 0])
        np.testing.assert_allclose(md["std_255"], [1, 1, 1], rtol=1e-6)
        np.testing.assert_allclose(md["stats_min"], [0] * (3 if kind.startswith("float32") else 1))
        np.testing.assert_allclose(md["stats_max"], [255] * (3 if kind.startswith("float32") else 1), rtol=1e-6)
        with zipfile.ZipFile(io.BytesIO(out)) as zf:  # associated files: an uncompressed zip after the model
            assert zf.namelist() == ["labels.txt"] and zf.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
        again = _meta(out, labels=[f"class {i}" for i in range(1000)], version="2")  # replaces, not stacks
        md2 = read_metadata(again)
        assert md2["labels"][7] == "class 7" and md2["version"] == "2" and md2["associated_files"] == ["labels.txt"]
        assert abs(len(again) - len(out)) < 20_000
        assert read_metadata(data) == {}
        assert _meta(data) == out  # byte-reproducible: no clock in the archive
        assert zipfile.ZipFile(io.BytesIO(out)).getinfo("labels.txt").date_time == (1980, 1, 1, 0, 0, 0)


@pytest.mark.slow
def test_metadata_keeps_constants_stored_after_the_flatbuffer(mv2, photos):
    """ai-edge-quantizer writes big constants after the flatbuffer (Buffer.offset); they must survive."""
    from ai_edge_litert import schema_py_generated as tfl
    from ai_edge_quantizer import qtyping, quantizer

    _, _, files = mv2
    q = quantizer.Quantizer(files["float32"])
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key="float_casting")
    fp16 = bytes(q.quantize().quantized_model)
    root = tfl.Model.GetRootAs(fp16, 0)
    assert any(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength()))
    with_meta = _meta(fp16)
    pixels = np.stack(list(photos.values()))
    np.testing.assert_array_equal(TFLiteModel(with_meta).predict_pixels(pixels),
                                  TFLiteModel(fp16).predict_pixels(pixels, Preprocess(RES, (0,) * 3, (1 / 255,) * 3)))
    assert read_metadata(with_meta)["labels"] == imagenet_labels()


@pytest.mark.slow
def test_inspect_real_int8_file(mv2, tmp_path):
    _, _, files = mv2
    path = tmp_path / "int8_uint8io.tflite"
    path.write_bytes(_meta(files["int8_uint8io"]))
    info = inspect_tflite_safe(path)
    assert info["bytes"] == path.stat().st_size and info["bytes"] < 5_000_000
    assert info["inputs"][0]["dtype"] == "uint8" and info["inputs"][0]["shape"] == [1, RES, RES, 3]
    assert info["outputs"][0]["dtype"] == "uint8" and info["outputs"][0]["shape"] == [1, 1000]
    assert info["ops"]["CONV_2D"] == 35 and info["ops"]["DEPTHWISE_CONV_2D"] >= 17  # + a 1x1 normalising one
    assert "CONV_2D" not in info["float_op_names"] and "DEPTHWISE_CONV_2D" not in info["float_op_names"]
    assert info["ops"]["SOFTMAX"] == 1 and "SOFTMAX" not in info["float_op_names"]  # int8 softmax kernel
    assert info["quantize"] >= 2 and info["transpose"] == 0  # the uint8<->int8 boundaries, no layout shuffles
    assert info["constant_types"]["INT8"] >= 52 and info["precision"] in ("int8", "mixed")
    assert info["float_ops"] == sum(info["float_op_names"].values())
    assert info["metadata"] == {"present": True, "names": info["metadata"]["names"], "labels_file": "labels.txt",
                                "labels": 1000, "name": "mobilenet_v2_1.00_224", "version": "1"}
    f32 = tmp_path / "float32.tflite"
    f32.write_bytes(files["float32"])
    info = inspect_tflite_safe(f32)
    assert info["precision"] == "float32" and info["float_ops"] == info["op_count"]
    assert info["metadata"]["present"] is False


@pytest.mark.slow
def test_add_metadata_rejects_bad_arguments(mv2):
    _, _, files = mv2
    data = files["float32"]
    for overrides, match in [({"labels": ["a", "b"]}, "2 labels for a model with 1000 outputs"),
                             ({"in_chans": 2, "mean": (0, 0), "std": (1, 1)}, "1 \\(grayscale\\) or 3"),
                             ({"std": (0.1, 0.0, 0.1)}, "positive"),
                             ({"mean": (0.5,)}, "3 values"),
                             ({"labels": ["x\ny"] + ["z"] * 999}, "single-line")]:
        with pytest.raises(EdgeCNNError, match=match):
            _meta(data, **overrides)


def test_metadata_rejects_non_tflite_bytes():
    for bad in (b"", b"\x89PNG\r\n\x1a\n" + bytes(64), bytes(100)):
        with pytest.raises(EdgeCNNError, match="not a TFLite model") as e:
            read_metadata(bad)
        assert "\n" not in str(e.value)
        with pytest.raises(EdgeCNNError, match="not a TFLite model"):
            _meta(bad)
