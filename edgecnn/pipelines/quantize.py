"""``edgecnn quantize``: int8 through the export pipeline, plus the fidelity report.

1. The model is built exactly as ``edgecnn export`` builds it (name + knobs + weights, or an
   edgecnn checkpoint).
2. Calibration images come from ``--calib-data``; when no ``--eval-data`` is given, the images of
   that folder that were *not* picked for calibration are held back for evaluation.
3. Optional cross-layer equalisation / bias correction (:mod:`edgecnn.quantize.equalize`) and
   ``--method auto`` (:func:`edgecnn.quantize.ptq.choose_method`).
4. :func:`edgecnn.pipelines.export.export` writes, verifies and measures the int8 ``.tflite`` files.
5. :func:`edgecnn.quantize.report.fidelity_report` compares the int8 file with float on the
   evaluation images; the per-layer table comes from the same recipe on the same calibration
   images in the same order (PT2E is deterministic), so it describes the file.
6. ``--keep-float LAYER``: a mixed-precision file beside it, with its size, latency and fidelity.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from edgecnn.data.transforms import Preprocess, list_images, load_image
from edgecnn.errors import EdgeCNNError
from edgecnn.io import check_output_dir
from edgecnn.quantize.methods import DEFAULT_METHOD

DEFAULT_CALIB_SAMPLES = 200
DEFAULT_EVAL_SAMPLES = 100
ONE_CHANNEL_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class EvalSet:
    """Evaluation images (N, H, W, C uint8 after resize/crop), optional labels, where they came from."""

    pixels: np.ndarray
    labels: np.ndarray | None
    source: str


@dataclass
class QuantizeResult:
    """What :func:`quantize` made: the export report, the fidelity report and the choices."""

    export: Any  # edgecnn.pipelines.export.ExportReport
    fidelity: Any  # edgecnn.quantize.report.FidelityReport
    method: str
    auto_scores: list[dict] = field(default_factory=list)
    equalize: dict | None = None
    mixed: dict | None = None
    files: dict[str, str] = field(default_factory=dict)
    qat: dict | None = None

    def to_dict(self) -> dict:
        from edgecnn.console import finite

        return finite({"method": self.method, "auto_scores": self.auto_scores, "equalize": self.equalize,
                       "qat": self.qat, "fidelity": self.fidelity.to_dict(), "mixed_precision": self.mixed,
                       "report_files": self.files, "export": self.export.to_dict()})


def image_channels(path: Path) -> int:
    """1 for grayscale image files, 3 for colour ones (from the header; 0 if unreadable)."""
    try:
        with Image.open(path) as im:
            return 1 if im.mode in ONE_CHANNEL_MODES else 3
    except Exception:  # unreadable files are skipped and counted later
        return 0


def check_channels(files: Sequence[Path], in_chans: int, what: str) -> None:
    """Raise when the sampled image files all have a channel count other than the model's."""
    seen = {c for c in (image_channels(p) for p in files[:16]) if c}
    if seen and in_chans not in seen:
        have = "grayscale (1 channel)" if seen == {1} else "RGB (3 channels)"
        want = "1 channel (grayscale)" if in_chans == 1 else f"{in_chans} channels (RGB)"
        raise EdgeCNNError(f"{what} images are {have} but the model takes {want}; use images of the "
                           f"model's kind")


def split_calibration(folder: Path, n: int, need: int, hold_back: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(calibration files, held-back evaluation files) from ``folder``, seeded.

    ``hold_back`` files (at most a third of the folder) are kept out of calibration for evaluation.
    """
    files = list_images(folder)
    if not files:
        raise EdgeCNNError(f"--calib-data {folder} holds no image files (looked for .jpg/.png/... recursively)")
    random.Random(seed).shuffle(files)
    held = files[:min(hold_back, len(files) // 3)]
    calib = files[len(held):][:n]
    if len(calib) < need:
        extra = f" ({len(held)} of its {len(files)} held back for evaluation; pass --eval-data to use all)" \
            if held else ""
        raise EdgeCNNError(f"not enough calibration images: the method needs at least {need}, --calib-data "
                           f"{folder} gives {len(calib)}{extra}")
    return calib, held


def model_labels(meta: Any, num_classes: int) -> list[str] | None:
    """The model's class names: the checkpoint's, ImageNet's for 1000 classes, else None."""
    if meta is not None and meta.labels and len(meta.labels) == num_classes:
        return list(meta.labels)
    if num_classes == 1000:
        from edgecnn.labels import imagenet_labels

        return imagenet_labels()
    return None


def _load(files: Sequence[Path], preprocess: Preprocess) -> tuple[np.ndarray, list[int]]:
    """uint8 pixels of the readable ``files`` (resized, cropped) and the indices of those that loaded."""
    images, kept = [], []
    for i, path in enumerate(files):
        try:
            images.append(preprocess.to_uint8(load_image(path)))
            kept.append(i)
        except EdgeCNNError:
            continue
    if not images:
        raise EdgeCNNError(f"no readable evaluation image (first file: {files[0] if files else 'none'})")
    return np.stack(images), kept


def load_eval(folder: Path, preprocess: Preprocess, labels: list[str] | None, num_classes: int,
              n: int, seed: int = 0) -> EvalSet:
    """``--eval-data``: class sub-folders (labelled; names must be model classes) or plain images
    (labelled when a 1000-class model meets photos named ``<ImageNet wnid>_...``)."""
    from edgecnn.data.datasets import class_dirs

    if not folder.is_dir():
        raise EdgeCNNError(f"--eval-data {folder} does not exist or is not a directory")
    classes = class_dirs(folder)
    pairs: list[tuple[Path, int]] = []
    if classes:
        lookup = {name.lower(): i for i, name in enumerate(labels or [])}
        for d in classes:
            key = d.name.lower()
            index = lookup.get(key, int(key) if key.isdigit() and int(key) < num_classes else None)
            if index is None:
                known = f" ({', '.join((labels or [])[:4])}, ...)" if labels else \
                    f" (this model has no class names: name the folders 0..{num_classes - 1})"
                raise EdgeCNNError(f"--eval-data class folder {d.name!r} is not one of the model's "
                                   f"{num_classes} classes{known}")
            pairs += [(p, index) for p in list_images(d)]
    else:
        pairs = [(p, _synset_label(p, num_classes)) for p in list_images(folder)]
    labelled = bool(classes) or (bool(pairs) and all(y >= 0 for _, y in pairs))
    if not pairs:
        raise EdgeCNNError(f"--eval-data {folder} holds no image files")
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:n]
    check_channels([p for p, _ in pairs], preprocess.in_chans, "--eval-data")
    pixels, kept = _load([p for p, _ in pairs], preprocess)
    y = np.asarray([pairs[i][1] for i in kept]) if labelled else None
    return EvalSet(pixels, y, f"{len(kept)} images from {folder}" + (" (labelled)" if labelled else ""))


def _synset_label(path: Path, num_classes: int) -> int:
    """A 1000-class model's label for an ImageNet photo named ``<wnid>_...``; -1 when there is none."""
    from edgecnn.labels import synset_index

    index = synset_index(path.name) if num_classes == 1000 else None
    return -1 if index is None else index


def quantize(model_or_name: str | Path, *, calib_data: str | Path, eval_data: str | Path | None = None,
             method: str = DEFAULT_METHOD, cle: bool | None = None, bias_correction: bool | None = None,
             keep_float: Sequence[str] = (), calib_samples: int = DEFAULT_CALIB_SAMPLES,
             eval_samples: int = DEFAULT_EVAL_SAMPLES, layer_images: int = 8, io: str = "float32",
             layout: str = "nhwc", out: str | Path | None = None, weights: str | None = None,
             res: int | None = None, num_classes: int | None = None, in_chans: int | None = None,
             knobs: dict | None = None, qat_epochs: int = 0, train_data: str | Path | None = None,
             qat_lr: float | None = None, qat_batch_size: int | None = None,
             progress: bool = True) -> QuantizeResult:
    """Quantise to full int8 through :func:`edgecnn.pipelines.export.export` and report its fidelity.

    ``cle``/``bias_correction`` None (default): on for trained models (the most faithful recipe
    measured, ``benchmarks/studies/quantize_fidelity.py``), off for random weights and with QAT.
    ``qat_epochs`` > 0: quantisation-aware fine-tuning (:mod:`edgecnn.quantize.qat`) on
    ``train_data`` (default: the checkpoint's training data) replaces calibrated ranges by learned
    ones; the fine-tuned model is also saved as ``qat.ckpt`` in the output folder.
    """
    from edgecnn.converters.base import ConvertJob, captured_output
    from edgecnn.data.calibration import calibration_images
    from edgecnn.models import canonical_name
    from edgecnn.pipelines.export import build_model, export, latency_ms
    from edgecnn.quantize.equalize import equalize_model
    from edgecnn.quantize.ptq import (MIN_AUTO_IMAGES, MIN_CALIB_IMAGES, check_method, choose_method,
                                      quantize_pt2e, to_tflite, unquantized_layers)
    from edgecnn.quantize.report import output_metrics, write_report

    if method != "auto":
        check_method(method)
    need = MIN_AUTO_IMAGES if method == "auto" else MIN_CALIB_IMAGES[method]
    calib_dir = Path(calib_data).expanduser()
    if not calib_dir.is_dir():
        raise EdgeCNNError(f"--calib-data {calib_dir} does not exist or is not a directory")
    model, meta, _, _ = build_model(model_or_name, dict(knobs or {}), weights, num_classes, in_chans)
    cfg = model.edgecnn_config
    res = cfg.spec.check_res(res if res is not None else meta.preprocess.res if meta is not None else cfg.default_res)
    preprocess = meta.preprocess if meta is not None and res == meta.preprocess.res else Preprocess.for_model(model, res)
    if qat_epochs:
        if cle or bias_correction:
            raise EdgeCNNError("--qat-epochs learns the int8 ranges and weights itself; drop --cle and "
                               "--bias-correction")
        if keep_float or method == "auto":
            raise EdgeCNNError("--qat-epochs makes one int8 model with learned ranges; it does not combine "
                               "with --keep-float or --method auto")
        train_data = train_data if train_data is not None else (meta.data if meta is not None else None)
        if train_data is None:
            raise EdgeCNNError("--qat-epochs needs labelled training data: pass --train-data DATA (a dataset "
                               "name or a folder with one sub-folder per class)")
        cle = bias_correction = False
    elif train_data is not None:
        raise EdgeCNNError("--train-data is for quantisation-aware training; add --qat-epochs N")
    trained = meta is not None or weights is not None  # random weights: nothing to keep faithful to
    cle = trained if cle is None else cle
    bias_correction = trained if bias_correction is None else bias_correction
    if io not in ("float32", "int8"):
        raise EdgeCNNError(f"--io takes float32 or int8 here, got {io!r} (uint8 camera-byte files: "
                           f"edgecnn export --io uint8)")
    if out is not None:
        check_output_dir(out)  # before calibration and training, as export does

    calib_files, held = split_calibration(calib_dir, calib_samples, need,
                                          0 if eval_data is not None else eval_samples)
    check_channels(calib_files, preprocess.in_chans, "--calib-data")
    if eval_data is not None:
        evalset = load_eval(Path(eval_data).expanduser(), preprocess, model_labels(meta, cfg.num_classes),
                            cfg.num_classes, eval_samples)
    elif held:
        pixels, kept = _load(held, preprocess)
        evalset = EvalSet(pixels, None, f"{len(kept)} images of {calib_dir} held back from calibration")
    else:
        raise EdgeCNNError(f"no evaluation images: --calib-data {calib_dir} has too few images to hold "
                           f"some back; pass --eval-data DIR")

    with tempfile.TemporaryDirectory(prefix="edgecnn-calib-") as tmp:
        for i, path in enumerate(calib_files):  # the chosen images, as a folder export can read
            (Path(tmp) / f"{i:05d}{path.suffix.lower()}").symlink_to(path.resolve())
        calib_set = calibration_images(preprocess, len(calib_files), calib_data=tmp)
        if len(calib_set.pixels) < need:
            raise EdgeCNNError(f"only {len(calib_set.pixels)} readable calibration images; the method needs {need}")
        calib = preprocess.normalize(calib_set.pixels)

        model_q, equalized, tuned = model, None, None
        if cle or bias_correction:
            model_q, eq = equalize_model(model, calib, cle=cle, bias_correction=bias_correction)
            equalized = eq.to_dict()
        if qat_epochs:
            from edgecnn.quantize.qat import DEFAULT_BATCH, DEFAULT_LR, qat_finetune

            tuned = qat_finetune(model, preprocess, str(train_data), epochs=qat_epochs, lr=qat_lr or DEFAULT_LR,
                                 batch_size=qat_batch_size or DEFAULT_BATCH, layout=layout,
                                 labels=model_labels(meta, cfg.num_classes),
                                 train_config=meta.extra.get("train_config") if meta is not None else None,
                                 progress=progress)
            model_q, method = tuned.model, "qat"
        scores: list[dict] = []
        if method == "auto":
            method, scores = choose_method(model_q, calib, progress=progress)
        name = canonical_name(cfg, res)
        exported = export(model_q if model_q is not model else model_or_name, **(knobs or {}), res=res,
                          num_classes=num_classes, in_chans=in_chans,
                          weights=None if model_q is not model else weights, quantize="int8", io=io,
                          layout=layout, calib_data=tmp, calib_samples=len(calib_files),
                          calib_method=None if tuned else method, meta=meta,
                          quantized=tuned.quantized if tuned else None, scores="logits",  # SQNR is on logits
                          out=out if out is not None else Path("exports") / f"{name}_{method}",
                          progress=progress)
        # the graph and calibration inputs export quantised (same images, same order: PT2E is
        # deterministic, so this is the file's recipe, for the per-layer table)
        job = ConvertJob(model=model_q, preprocess=preprocess, layout=layout, calib_pixels=calib_set.pixels,
                         scratch=Path(tmp), calib_method=method)
        graph, graph_calib = job.graph(), job.inputs()
    int8_file = Path(exported.files[0]["path"])
    prefix = "model." if graph is not model_q else ""
    q = tuned.quantized if tuned else quantize_pt2e(graph, graph_calib, method=method, layout=layout,
                                                    progress=progress)
    eval_inputs = ConvertJob(model=model_q, preprocess=preprocess, layout=layout, calib_pixels=evalset.pixels,
                             scratch=Path("."), calib_method=method).inputs()
    fid = fidelity_report(model, q, int8_file, evalset.pixels, preprocess, evalset.labels,
                          graph_inputs=eval_inputs, layer_images=layer_images, progress=progress,
                          name=exported.name)
    entry = exported.files[0]
    fid.extra = {"eval_source": evalset.source, "file": str(int8_file), "calibration": calib_set.source,
                 "cle": cle, "bias_correction": bias_correction,
                 "float_ops": {"in_file": entry["float_ops"], "by_op": entry["float_op_names"],
                               "unannotated_layers": unquantized_layers(q, prefix)}}
    mixed = None
    if keep_float:
        from edgecnn.converters.tflite_runtime import TFLiteModel
        from edgecnn.io import write_bytes
        from edgecnn.quantize.equalize import predict

        q_mixed = quantize_pt2e(graph, graph_calib, method=method, layout=layout, progress=progress,
                                keep_float=[prefix + k for k in keep_float])
        with tempfile.TemporaryDirectory(prefix="edgecnn-mixed-") as logs, \
                captured_output(Path(logs) / "converter.log", verbose=False):  # litert-torch prints
            data = to_tflite(q_mixed)
        path = write_bytes(Path(exported.out_dir) / f"{exported.name}_int8_mixed_int8io.tflite", data)
        ref = predict(model, preprocess.normalize(evalset.pixels)).numpy()
        full_ms = exported.files[0].get("latency_ms") or latency_ms(int8_file)
        mixed = {"file": str(path), "keep_float": list(keep_float), "bytes": path.stat().st_size,
                 "int8_bytes": int8_file.stat().st_size, "latency_ms": round(latency_ms(path), 3),
                 "int8_latency_ms": round(full_ms, 3),
                 "outputs": output_metrics(ref, TFLiteModel(path).predict(eval_inputs), evalset.labels)}
    files = {k: str(v) for k, v in write_report(fid, exported.out_dir).items()}
    if tuned:
        files["checkpoint"] = str(save_qat_checkpoint(model, meta, preprocess, tuned, Path(exported.out_dir)))
    return QuantizeResult(export=exported, fidelity=fid, method=method, auto_scores=scores,
                          equalize=equalized, mixed=mixed, files=files, qat=tuned.to_dict() if tuned else None)


def save_qat_checkpoint(model: Any, meta: Any, preprocess: Preprocess, tuned: Any, folder: Path) -> Path:
    """``folder/qat.ckpt``: the QAT-fine-tuned weights in the zoo architecture, exportable by either back end."""
    import copy

    from edgecnn.checkpoint import CheckpointMeta, save_checkpoint
    from edgecnn.quantize.qat import unfold_into

    cfg = model.edgecnn_config
    target = unfold_into(copy.deepcopy(model), tuned.model, tuned.folded)
    labels = model_labels(meta, cfg.num_classes) or []
    base = meta or CheckpointMeta(model=cfg.name, knobs=dict(cfg.knobs), num_classes=cfg.num_classes,
                                  in_chans=cfg.in_chans, preprocess=preprocess, labels=labels)
    extra = {**base.extra, "qat": tuned.to_dict()}
    return save_checkpoint(folder / "qat.ckpt", target, CheckpointMeta(
        model=base.model, knobs=base.knobs, num_classes=base.num_classes, in_chans=base.in_chans,
        preprocess=base.preprocess, labels=base.labels or labels, data=tuned.data, extra=extra))


def fidelity_report(model: Any, q: Any, tflite: bytes | str | Path, pixels: np.ndarray, preprocess: Preprocess,
                    labels: Sequence[int] | None = None, *, graph_inputs: Any = None,
                    layer_images: int = 8, progress: bool = True, name: str | None = None) -> Any:
    """The fidelity report of the int8 ``tflite`` (quantised as ``q``) against float ``model``.

    ``pixels`` (N, H, W, C uint8, resized and cropped) are evaluation images that did not
    calibrate ``q``; the file gets them as an app would (``TFLiteModel.predict_pixels``), the float
    model normalised with ``preprocess``. ``graph_inputs`` are the same images as ``q``'s graphs
    take them (default: normalised NCHW); the per-layer table uses the first ``layer_images``.
    """
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.quantize.equalize import predict
    from edgecnn.quantize.report import FidelityReport, layer_sqnr, output_metrics

    ref = predict(model.eval(), preprocess.normalize(pixels)).numpy()
    out = TFLiteModel(tflite).predict_pixels(pixels, preprocess)
    metrics = output_metrics(ref, out, None if labels is None else np.asarray(labels))
    inputs = preprocess.normalize(pixels) if graph_inputs is None else graph_inputs
    layers = layer_sqnr(q, inputs[:layer_images], progress) if layer_images > 0 else []
    cfg = getattr(model, "edgecnn_config", None)
    return FidelityReport(model=name or (cfg.name if cfg else type(model).__name__), method=q.method,
                          calib_images=q.calib_images, outputs=metrics, layers=layers,
                          layer_images=min(layer_images, int(len(pixels))))
