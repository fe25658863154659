"""Standard TFLite metadata for image classifiers: labels and input normalisation inside the file.

The metadata is the flatbuffer schema that MediaPipe Tasks and the TFLite Task Library read
(``metadata_schema.fbs``, file identifier ``M001``): a ``ModelMetadata`` whose one
``SubGraphMetadata`` describes the input image (``ImageProperties`` RGB or GRAYSCALE,
``NormalizationOptions``, ``Stats``) and the output scores (``labels.txt`` as a
``TENSOR_AXIS_LABELS`` associated file). The schema classes are the generated Python ones that the
``mediapipe`` wheel ships; the model itself is edited with the generated ``tflite`` schema object
API (``ModelT``) from ``ai_edge_litert``, the same way the official ``MetadataPopulator`` does:

- the metadata buffer is appended to ``Model.buffers`` and named ``"TFLITE_METADATA"`` in
  ``Model.metadata`` (replacing an earlier one);
- associated files are packed as an uncompressed zip archive appended after the flatbuffer, so the
  file stays a valid ``.tflite`` and is also a zip (``unzip -l model.tflite`` lists ``labels.txt``).

Normalisation in the metadata is in 0-255 pixel units, as the task libraries apply it:
``input = (pixel - mean_255) / std_255`` with ``mean_255 = mean * 255``, ``std_255 = std * 255`` for
a model trained on ``(pixel / 255 - mean) / std``. MediaPipe feeds uint8-input models raw bytes and
ignores the normalisation there.

What MediaPipe Tasks (0.10, ``vision.ImageClassifier``) accepts, measured on this project's files:

- a float32 input needs ``NormalizationOptions`` (without metadata it refuses the file), and ONE
  mean/std for all channels: ImageNet's per-channel values are refused ("Per-channel image
  normalization is not available"). Export such models with the normalisation inside the graph
  (pixel values 0-255 in) and describe them with :func:`pixel_input_normalization`.
- inputs must be uint8 or float32 (int8 is refused); a uint8 input gets the raw bytes.
- without metadata a uint8 file still runs, but results carry no class names.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecnn.errors import EdgeCNNError, shorten

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
MAX_ASSOCIATED_BYTES = 16 << 20  # one associated file (labels.txt): ImageNet-21k's labels are ~0.5 MiB
MAX_ASSOCIATED_FILES = 64
# the output tensor's metadata name for each kind of scores (TFLite Support's classifiers use "probability")
SCORES_TENSOR_NAMES = {"softmax": "probability", "logits": "logits"}
# Every field written here exists since metadata schema 1.0.0; readers refuse newer requirements.
MIN_PARSER_VERSION = "1.0.0"
_MD: Any = None  # the metadata schema module, loaded once


def _metadata_schema() -> Any:
    """The generated ``metadata_schema_py_generated`` module that the mediapipe wheel ships.

    Loaded from its file: importing it through the ``mediapipe`` package would pull in all of
    MediaPipe and TensorFlow (~15 s); the generated module itself needs only ``flatbuffers``.
    """
    global _MD
    if _MD is None:
        spec = importlib.util.find_spec("mediapipe")  # locates the package without importing it
        path = (Path(spec.submodule_search_locations[0]) / "tasks" / "metadata" / "metadata_schema_py_generated.py"
                if spec is not None and spec.submodule_search_locations else None)
        if path is None or not path.is_file():
            raise EdgeCNNError("TFLite metadata needs the metadata schema that mediapipe ships; "
                               "install it with: pip install mediapipe")
        module_spec = importlib.util.spec_from_file_location("_edgecnn_tflite_metadata_schema", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        _MD = module
    return _MD


def pixel_input_normalization(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for :func:`add_metadata` when the graph takes raw pixel values 0-255.

    That is ``mean_255 = 0, std_255 = 1`` in the metadata: the app feeds pixels unchanged.
    """
    return (0.0,) * in_chans, (1.0 / 255.0,) * in_chans


def _schemas() -> tuple[Any, Any, Any]:
    """(tflite schema, metadata schema, flatbuffers) modules, imported on first use."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as tfl
    except ImportError as exc:
        raise EdgeCNNError(f"TFLite metadata needs ai-edge-litert and flatbuffers ({exc}); "
                           "install them with: pip install ai-edge-litert") from None
    return tfl, _metadata_schema(), flatbuffers


def _model_root(tfl: Any, model_bytes: bytes) -> Any:
    """The ``tflite.Model`` table of ``model_bytes``; a non-TFLite buffer raises one line."""
    if len(model_bytes) < 8 or model_bytes[4:8] != TFLITE_IDENTIFIER:
        raise EdgeCNNError("not a TFLite model: the TFL3 file identifier is missing")
    return tfl.Model.GetRootAs(model_bytes, 0)


def _split_zip(model_bytes: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(flatbuffer bytes, associated files) of a model that may carry an appended zip archive."""
    buf = io.BytesIO(model_bytes)
    if not zipfile.is_zipfile(buf):
        return model_bytes, {}
    with zipfile.ZipFile(buf) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ASSOCIATED_FILES:
            raise EdgeCNNError(f"the model's metadata archive holds {len(infos)} files (more than "
                               f"{MAX_ASSOCIATED_FILES}): not TFLite metadata")
        files = {info.filename: _read_capped(zf, info) for info in infos}
        start = min((info.header_offset for info in infos), default=len(model_bytes))
    return model_bytes[:start], files


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One associated file, refused when it unpacks to more than :data:`MAX_ASSOCIATED_BYTES`
    (a zip bomb: a small file that inflates to gigabytes)."""
    def refuse(size: str) -> EdgeCNNError:
        return EdgeCNNError(f"the model's associated file {shorten(info.filename)!r} unpacks to {size} (more "
                            f"than {MAX_ASSOCIATED_BYTES >> 20} MiB): refusing to read it")

    if info.file_size > MAX_ASSOCIATED_BYTES:
        raise refuse(f"{info.file_size / 2**20:.0f} MiB")
    with zf.open(info) as f:  # the recorded size may lie: read one byte past the cap at most
        data = f.read(MAX_ASSOCIATED_BYTES + 1)
    if len(data) > MAX_ASSOCIATED_BYTES:
        raise refuse("more")
    return data


def _input_tensor_type(tfl: Any, model: Any) -> int:
    subgraph = model.Subgraphs(0)
    return subgraph.Tensors(subgraph.Inputs(0)).Type()


def _build_metadata(md: Any, flatbuffers: Any, *, input_type: int, uint8: int, mean255: list[float],
                    std255: list[float], in_chans: int, name: str, description: str, version: str,
                    author: str, license: str, num_labels: int, scores: str) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier M001) for a one-input image classifier."""
    norm = md.ProcessUnitT()
    norm.optionsType = md.ProcessUnitOptions.NormalizationOptions
    norm.options = md.NormalizationOptionsT(mean=mean255, std=std255)

    image = md.ContentT()
    image.contentPropertiesType = md.ContentProperties.ImageProperties
    image.contentProperties = md.ImagePropertiesT(
        colorSpace=md.ColorSpaceType.GRAYSCALE if in_chans == 1 else md.ColorSpaceType.RGB)

    stats = md.StatsT()
    if input_type == uint8:  # raw camera bytes
        stats.min, stats.max = [0.0], [255.0]
    else:  # the float range that pixels 0..255 normalise to, per channel
        stats.min = [(0.0 - m) / s for m, s in zip(mean255, std255)]
        stats.max = [(255.0 - m) / s for m, s in zip(mean255, std255)]

    image_md = md.TensorMetadataT()
    image_md.name = "image"
    image_md.description = (f"Input image, {'grayscale' if in_chans == 1 else 'RGB'}; "
                            "float models take (pixel - mean) / std with mean/std in pixel units")
    image_md.content = image
    image_md.processUnits = [norm]
    image_md.stats = stats

    features = md.ContentT()
    features.contentPropertiesType = md.ContentProperties.FeatureProperties
    features.contentProperties = md.FeaturePropertiesT()
    labels_file = md.AssociatedFileT()
    labels_file.name = LABELS_FILE
    labels_file.description = f"{num_labels} class names, one per line, in output order"
    labels_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores_md = md.TensorMetadataT()
    scores_md.name = SCORES_TENSOR_NAMES[scores]
    scores_md.content = features
    scores_md.associatedFiles = [labels_file]
    if scores == "softmax":
        scores_md.description = (f"Probabilities of the {num_labels} classes (softmax, in [0, 1], summing "
                                 "to 1) in the order of labels.txt")
        scores_md.stats = md.StatsT()
        scores_md.stats.min, scores_md.stats.max = [0.0], [1.0]
    else:
        scores_md.description = "Class scores as raw logits (not probabilities) in the order of labels.txt"

    subgraph = md.SubGraphMetadataT()
    subgraph.name = "image_classifier"
    subgraph.inputTensorMetadata = [image_md]
    subgraph.outputTensorMetadata = [scores_md]

    meta = md.ModelMetadataT()
    meta.name, meta.description, meta.version = name, description, version
    meta.author, meta.license = author, license
    meta.subgraphMetadata = [subgraph]
    meta.minParserVersion = MIN_PARSER_VERSION

    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def add_metadata(model_bytes: bytes, *, labels: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 in_chans: int, name: str, description: str, version: str, author: str = "edgecnn",
                 license: str = "Apache-2.0", scores: str = "logits") -> bytes:
    """``model_bytes`` with image-classifier metadata and ``labels.txt`` embedded.

    ``mean``/``std`` are per-channel, for pixels scaled to [0, 1] (the :class:`Preprocess`
    convention); they are stored in 0-255 units. For a graph that takes raw pixels pass
    :func:`pixel_input_normalization` (MediaPipe refuses per-channel values, see the module doc).
    Constants stored after the flatbuffer (ai-edge-quantizer's layout) are moved inside. ``labels`` must match the output size. Existing
    metadata and associated files are replaced. ``scores``: what the output holds, ``softmax``
    (probabilities: output tensor named ``probability`` with stats 0..1, as TFLite Support's
    classifiers) or ``logits`` (named ``logits``). Returns the new file's bytes.
    """
    tfl, md, flatbuffers = _schemas()
    flat, _ = _split_zip(bytes(model_bytes))
    root = _model_root(tfl, flat)
    if scores not in SCORES_TENSOR_NAMES:
        raise EdgeCNNError(f"scores must be one of {', '.join(SCORES_TENSOR_NAMES)}, got {scores!r}")
    if in_chans not in (1, 3):
        raise EdgeCNNError(f"TFLite image metadata describes 1 (grayscale) or 3 (RGB) channels, got {in_chans}")
    if len(mean) != in_chans or len(std) != in_chans:
        raise EdgeCNNError(f"mean and std need {in_chans} values each, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise EdgeCNNError(f"std values must be positive, got {list(std)}")
    labels = [str(label) for label in labels]
    if any("\n" in label or not label.strip() for label in labels):
        raise EdgeCNNError("labels must be non-empty single-line strings")
    subgraph = root.Subgraphs(0)
    num_outputs = int(np.prod(subgraph.Tensors(subgraph.Outputs(0)).ShapeAsNumpy()[1:]))
    if len(labels) != num_outputs:
        raise EdgeCNNError(f"{len(labels)} labels for a model with {num_outputs} outputs")

    meta_buf = _build_metadata(
        md, flatbuffers, input_type=_input_tensor_type(tfl, root), uint8=tfl.TensorType.UINT8,
        mean255=[float(m) * 255.0 for m in mean], std255=[float(s) * 255.0 for s in std],
        in_chans=in_chans, name=name, description=description, version=version, author=author,
        license=license, num_labels=len(labels), scores=scores)

    model = tfl.ModelT.InitFromObj(root)
    for buf in model.buffers or []:  # constants stored after the flatbuffer: pull them inside
        if (getattr(buf, "offset", 0) or 0) > 1:
            buf.data = np.frombuffer(flat, dtype=np.uint8, count=buf.size, offset=buf.offset)
            buf.offset, buf.size = 0, 0
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(meta_buf, dtype=np.uint8)
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    model.buffers = list(model.buffers or []) + [buffer]
    entry = tfl.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flat) + len(meta_buf) + 1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)

    out = io.BytesIO()
    out.write(bytes(builder.Output()))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:  # readers need it uncompressed
        # a fixed timestamp (zip's epoch): the same model and labels give the same bytes on every export
        member = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(member, "\n".join(labels) + "\n", compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def _text(value: Any) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def metadata_buffer(model_bytes: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer of a model, or None when it has none."""
    tfl, _, _ = _schemas()
    flat, _ = _split_zip(bytes(model_bytes))
    root = _model_root(tfl, flat)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _text(entry.Name()) == METADATA_NAME:
            buffer = root.Buffers(entry.Buffer())
            offset = buffer.Offset() if hasattr(buffer, "Offset") else 0
            if offset > 1:  # large models keep buffers outside the flatbuffer
                return flat[offset:offset + buffer.Size()]
            return buffer.DataAsNumpy().tobytes()
    return None


def read_metadata(model_bytes: bytes) -> dict:
    """What an app reads from the file: name, version, labels, normalisation ({} without metadata).

    Keys: ``name, description, version, author, license, min_parser_version, color_space,
    mean_255, std_255`` (pixel units), ``mean, std`` (for [0, 1] pixels), ``stats_min, stats_max,
    labels_file, labels`` (None when the file is not packed), ``associated_files``, ``scores``
    (``softmax``, ``logits``, or None when the output's metadata does not say; files before
    ``--scores`` named the output ``scores`` and held logits).
    """
    _, md, _ = _schemas()
    raw = metadata_buffer(model_bytes)
    if raw is None:
        return {}
    if len(raw) < 8 or raw[4:8] != METADATA_IDENTIFIER:
        raise EdgeCNNError("the model's TFLITE_METADATA buffer is not TFLite metadata (no M001 identifier)")
    try:
        meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0))
    except Exception as exc:  # corrupt flatbuffer tables raise struct/index errors
        raise EdgeCNNError(f"the model's TFLite metadata is corrupt: {exc.__class__.__name__}") from None
    _, files = _split_zip(bytes(model_bytes))
    out: dict[str, Any] = {
        "name": _text(meta.name), "description": _text(meta.description), "version": _text(meta.version),
        "author": _text(meta.author), "license": _text(meta.license),
        "min_parser_version": _text(meta.minParserVersion), "color_space": None,
        "mean_255": None, "std_255": None, "mean": None, "std": None, "stats_min": None, "stats_max": None,
        "labels_file": None, "labels": None, "associated_files": sorted(files), "scores": None}
    subgraph = (meta.subgraphMetadata or [None])[0]
    if subgraph is None:
        return out
    image = (subgraph.inputTensorMetadata or [None])[0]
    if image is not None:
        props = image.content.contentProperties if image.content else None
        if isinstance(props, md.ImagePropertiesT):
            names = {v: k for k, v in vars(md.ColorSpaceType).items() if not k.startswith("_")}
            out["color_space"] = names.get(props.colorSpace)
        for unit in image.processUnits or []:
            if isinstance(unit.options, md.NormalizationOptionsT):
                out["mean_255"] = [float(v) for v in unit.options.mean]
                out["std_255"] = [float(v) for v in unit.options.std]
                out["mean"] = [v / 255.0 for v in out["mean_255"]]
                out["std"] = [v / 255.0 for v in out["std_255"]]
        if image.stats is not None and image.stats.min is not None:
            out["stats_min"] = [float(v) for v in image.stats.min]
            out["stats_max"] = [float(v) for v in image.stats.max]
    scores = (subgraph.outputTensorMetadata or [None])[0]
    if scores is not None:
        kinds = {**{v: k for k, v in SCORES_TENSOR_NAMES.items()}, "scores": "logits"}
        out["scores"] = kinds.get(_text(scores.name))
    for assoc in (scores.associatedFiles or []) if scores is not None else []:
        if assoc.type == md.AssociatedFileType.TENSOR_AXIS_LABELS:
            out["labels_file"] = _text(assoc.name)
            if out["labels_file"] in files:
                out["labels"] = files[out["labels_file"]].decode("utf-8", errors="replace").splitlines()
    return out
