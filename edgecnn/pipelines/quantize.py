"""``edgecnn quantize``: int8 through the export pipeline, plus the fidelity report.

1. The model is built exactly as ``edgecnn export`` builds it (name + knobs + weights, or an
   edgecnn checkpoint).
2. Calibration images come from ``--calib-data``; when no ``--eval-data`` is given, the images of
   that folder that were *not* picked for calibration are held back for evaluation.
3. Optional cross-layer equalisation / bias correction (:mod:`edgecnn.quantize.equalize`) and
   ``--method auto`` (:func:`edgecnn.quantize.ptq.choose_method`).
4. One PT2E calibration (:func:`edgecnn.quantize.ptq.quantize_pt2e`) makes the int8 graph (QAT:
   the learned one; ``--rounding adaround``: its weights re-rounded on the calibration images by
   :mod:`edgecnn.quantize.adaround`); :func:`edgecnn.pipelines.export.export` converts that graph
   as it is, then writes, verifies and measures the file.
5. :func:`fidelity_report` compares the int8 file with float on the evaluation images; its
   per-layer table comes from the same graph, so it describes the file.
6. ``--keep-float LAYER``: a mixed-precision graph, exported beside it by the same export
   (``_int8_mixed``: metadata, verification, report entry), with its size, latency and fidelity.
   ``--keep-float auto``: the layers of the per-layer proposal
   (:func:`~edgecnn.quantize.report.propose_keep_float`), measured on calibration images so the
   evaluation images judge the choice without having made it; no mixed file when none stands out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from edgecnn.data.transforms import Preprocess, list_images, load_image
from edgecnn.errors import EdgeCNNError
from edgecnn.converters.registry import LAYOUTS
from edgecnn.io import check_output_dir
from edgecnn.pipelines.export import model_labels
from edgecnn.quantize.methods import DEFAULT_METHOD, DEFAULT_ROUNDING
from edgecnn.quantize.report import write_report

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
    stages: dict[str, float] = field(default_factory=dict)  # seconds per step of quantize()
    rounding: str = DEFAULT_ROUNDING
    adaround: dict | None = None  # edgecnn.quantize.adaround.adaround's report

    def to_dict(self) -> dict:
        from edgecnn.console import finite

        return finite({"method": self.method, "auto_scores": self.auto_scores, "equalize": self.equalize,
                       "rounding": self.rounding, "adaround": self.adaround, "qat": self.qat,
                       "fidelity": self.fidelity.to_dict(), "mixed_precision": self.mixed,
                       "report_files": self.files, "stages": self.stages, "export": self.export.to_dict()})


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


@dataclass(frozen=True)
class QuantizeOptions:
    """Every choice of :func:`quantize` except the model, checked once when made (one-line errors).

    ``method``: an activation-range method (:data:`edgecnn.quantize.methods.METHODS`) or ``auto``;
    ``rounding``: how weights meet the int8 grid (:data:`edgecnn.quantize.methods.ROUNDINGS`);
    ``cle``/``bias_correction`` None (default): on for trained models (the most faithful recipe
    measured, ``benchmarks/studies/quantize_fidelity.py``), off for random weights and with QAT;
    bias correction is also off by default with ``rounding="adaround"``, whose rounding already
    removes the mean output shift that it corrects.
    ``keep_float``: layers (``model.named_modules()`` names) of an extra mixed-precision file, or
    ``("auto",)``: the per-layer proposal's (chosen on the calibration images).
    ``qat_epochs`` > 0: quantisation-aware fine-tuning (:mod:`edgecnn.quantize.qat`) on
    ``train_data`` (default: the checkpoint's training data) replaces calibrated ranges by learned
    ones. ``io``, ``layout``, ``out`` and ``progress`` are the int8 export's (:class:`ExportOptions`).
    """

    calib_data: str | Path
    eval_data: str | Path | None = None
    method: str = DEFAULT_METHOD
    rounding: str = DEFAULT_ROUNDING
    cle: bool | None = None
    bias_correction: bool | None = None
    keep_float: Sequence[str] = ()
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    layer_images: int = 8
    io: str = "float32"
    layout: str = "nhwc"
    out: str | Path | None = None
    qat_epochs: int = 0
    train_data: str | Path | None = None
    qat_lr: float | None = None
    qat_batch_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from edgecnn.quantize.ptq import check_method, check_rounding

        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if AUTO in self.keep_float and len(self.keep_float) > 1:
            raise EdgeCNNError("--keep-float auto chooses the layers itself; drop the layer names beside it")
        if self.method != "auto":
            check_method(self.method)
        check_rounding(self.rounding)
        if not Path(self.calib_data).expanduser().is_dir():
            raise EdgeCNNError(f"--calib-data {Path(self.calib_data).expanduser()} does not exist or is not a directory")
        if self.qat_epochs:
            if self.cle or self.bias_correction:
                raise EdgeCNNError("--qat-epochs learns the int8 ranges and weights itself; drop --cle and "
                                   "--bias-correction")
            if self.keep_float or self.method == "auto" or self.rounding != DEFAULT_ROUNDING:
                raise EdgeCNNError("--qat-epochs makes one int8 model with learned ranges and weights; it does not "
                                   "combine with --keep-float, --method auto or --rounding adaround")
        elif self.train_data is not None:
            raise EdgeCNNError("--train-data is for quantisation-aware training; add --qat-epochs N")
        if self.io not in ("float32", "int8"):
            raise EdgeCNNError(f"--io takes float32 or int8 here, got {self.io!r} (uint8 camera-byte files: "
                               f"edgecnn export --io uint8)")
        if self.layout not in LAYOUTS:
            raise EdgeCNNError(f"--layout takes {' or '.join(LAYOUTS)}, got {self.layout!r}")
        if self.out is not None:
            check_output_dir(self.out)  # before calibration and training, as export does

    @property
    def need(self) -> int:
        """The fewest calibration images the method takes."""
        from edgecnn.quantize.methods import MIN_AUTO_IMAGES, MIN_CALIB_IMAGES

        return MIN_AUTO_IMAGES if self.method == "auto" else MIN_CALIB_IMAGES.get(self.method, 1)


AUTO = "auto"  # --keep-float auto


@dataclass
class _Recipe:
    """How the int8 graph is made: the float model it quantises (equalised or QAT-tuned), the method."""

    model: Any
    method: str
    cle: bool
    bias_correction: bool
    equalized: dict | None = None
    tuned: Any = None  # edgecnn.quantize.qat.QATResult
    auto_scores: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    times[name] = round(time.perf_counter() - t0, 3)


def quantize(model: str | Path | Any, *, options: QuantizeOptions | None = None, knobs: Mapping[str, Any] | None = None,
             res: int | None = None, num_classes: int | None = None, in_chans: int | None = None,
             weights: str | None = None, **keywords: Any) -> QuantizeResult:
    """Quantise to full int8 through :func:`edgecnn.pipelines.export.export` and report its fidelity.

    ``model``, ``knobs``, ``res``, ``num_classes``, ``in_chans``, ``weights``: as for export
    (:class:`ModelRequest`). ``options``: a :class:`QuantizeOptions`; its fields may also be given as
    keywords (``calib_data="photos/"``, ``method="auto"``), which override ``options``; any other
    keyword is a model knob. The model is built once and calibrated once: that PT2E graph is both
    the file (the export converts it as it is) and the per-layer table's subject.
    """
    from edgecnn.pipelines.export import ModelRequest, build_model, export

    names = {f.name for f in dataclasses.fields(QuantizeOptions)}
    chosen = {k: v for k, v in keywords.items() if k in names}
    opts = dataclasses.replace(options, **chosen) if options is not None else QuantizeOptions(**chosen)
    knobs = {**(knobs or {}), **{k: v for k, v in keywords.items() if k not in names and v is not None}}
    times: dict[str, float] = {}
    with _timed(times, "build"):
        built = build_model(ModelRequest(model, knobs=knobs, res=res, num_classes=num_classes, in_chans=in_chans,
                                         weights=weights))
    train_data = _qat_data(opts, built)
    with _timed(times, "images"):
        calib_files, evalset = _split_images(opts, built)
    with tempfile.TemporaryDirectory(prefix="edgecnn-calib-") as tmp:
        calib_set = _calibration_set(calib_files, built.preprocess, Path(tmp), opts.need)
        recipe = _recipe(opts, built, calib_set, train_data, times)
        with _timed(times, "calibrate"):
            job, q, q_mixed, keep, auto = _calibrate(opts, built, recipe, calib_set, Path(tmp))
            opts = dataclasses.replace(opts, keep_float=keep)
        with _timed(times, "export"):
            exported = export(dataclasses.replace(built, model=recipe.model), options=_export_options(
                opts, built, recipe.method, calib_dir=Path(tmp), n=len(calib_files), quantized=q, mixed=q_mixed))
    with _timed(times, "fidelity"):
        eval_inputs = dataclasses.replace(job, calib_pixels=evalset.pixels).inputs()
        fid = _fidelity(opts, built, recipe, q, exported, evalset, eval_inputs, calib_set.source,
                        "model." if job.graph() is not recipe.model else "")
        mixed = _mixed_entry(opts, built, exported, evalset, eval_inputs) if q_mixed is not None else None
    if auto is not None:
        fid.extra["keep_float_auto"] = auto
    files = {k: str(v) for k, v in write_report(fid, exported.out_dir).items()}
    if recipe.tuned:
        files["checkpoint"] = str(save_qat_checkpoint(built.model, built.meta, built.preprocess, recipe.tuned,
                                                      Path(exported.out_dir)))
    return QuantizeResult(export=exported, fidelity=fid, method=recipe.method, auto_scores=recipe.auto_scores,
                          equalize=recipe.equalized, mixed=mixed, files=files,
                          qat=recipe.tuned.to_dict() if recipe.tuned else None, stages=times,
                          rounding=opts.rounding, adaround=q.adaround)


def _qat_data(opts: QuantizeOptions, built: Any) -> str | None:
    """QAT's training data: the option, else the checkpoint's; QAT without any raises."""
    if not opts.qat_epochs:
        return None
    data = opts.train_data if opts.train_data is not None else (built.meta.data if built.meta is not None else None)
    if data is None:
        raise EdgeCNNError("--qat-epochs needs labelled training data: pass --train-data DATA (a dataset "
                           "name or a folder with one sub-folder per class)")
    return str(data)


def _split_images(opts: QuantizeOptions, built: Any) -> tuple[list[Path], EvalSet]:
    """The calibration files and the evaluation images (``--eval-data``, else held-back calibration files)."""
    calib_dir, cfg = Path(opts.calib_data).expanduser(), built.config
    calib_files, held = split_calibration(calib_dir, opts.calib_samples, opts.need,
                                          0 if opts.eval_data is not None else opts.eval_samples)
    check_channels(calib_files, built.preprocess.in_chans, "--calib-data")
    if opts.eval_data is not None:
        return calib_files, load_eval(Path(opts.eval_data).expanduser(), built.preprocess,
                                      model_labels(built.meta, cfg.num_classes), cfg.num_classes, opts.eval_samples)
    if not held:
        raise EdgeCNNError(f"no evaluation images: --calib-data {calib_dir} has too few images to hold "
                           f"some back; pass --eval-data DIR")
    pixels, kept = _load(held, built.preprocess)
    return calib_files, EvalSet(pixels, None, f"{len(kept)} images of {calib_dir} held back from calibration")


def _calibration_set(files: Sequence[Path], preprocess: Preprocess, folder: Path, need: int) -> Any:
    """The chosen calibration files linked into ``folder`` (which the export reads too), loaded."""
    from edgecnn.data.calibration import calibration_images

    for i, path in enumerate(files):
        (folder / f"{i:05d}{path.suffix.lower()}").symlink_to(path.resolve())
    calib_set = calibration_images(preprocess, len(files), calib_data=folder)
    if len(calib_set.pixels) < need:
        raise EdgeCNNError(f"only {len(calib_set.pixels)} readable calibration images; the method needs {need}")
    return calib_set


def _recipe(opts: QuantizeOptions, built: Any, calib_set: Any, train_data: str | None,
            times: dict[str, float]) -> _Recipe:
    """Equalisation and bias correction, QAT, or ``--method auto``'s choice, as the options ask."""
    from edgecnn.quantize.equalize import equalize_model
    from edgecnn.quantize.ptq import choose_method

    trained = built.trained  # random weights: nothing to keep faithful to
    cle = False if opts.qat_epochs else trained if opts.cle is None else opts.cle
    bias = False if opts.qat_epochs else opts.bias_correction if opts.bias_correction is not None else \
        trained and opts.rounding == DEFAULT_ROUNDING
    recipe = _Recipe(built.model, opts.method, cle, bias)
    calib = built.preprocess.normalize(calib_set.pixels)
    if cle or bias:
        with _timed(times, "equalize"):
            recipe.model, eq = equalize_model(built.model, calib, cle=cle, bias_correction=bias)
            recipe.equalized = eq.to_dict()
    if opts.qat_epochs:
        from edgecnn.quantize.qat import DEFAULT_BATCH, DEFAULT_LR, qat_finetune

        with _timed(times, "qat"):
            meta = built.meta
            recipe.tuned = qat_finetune(
                built.model, built.preprocess, train_data, epochs=opts.qat_epochs, lr=opts.qat_lr or DEFAULT_LR,
                batch_size=opts.qat_batch_size or DEFAULT_BATCH, layout=opts.layout,
                labels=model_labels(meta, built.config.num_classes),
                train_config=meta.extra.get("train_config") if meta is not None else None, progress=opts.progress)
        recipe.model, recipe.method = recipe.tuned.model, "qat"
    if recipe.method == "auto":
        with _timed(times, "auto"):
            recipe.method, recipe.auto_scores = choose_method(recipe.model, calib, progress=opts.progress)
    return recipe


def _calibrate(opts: QuantizeOptions, built: Any, recipe: _Recipe, calib_set: Any,
               scratch: Path) -> tuple[Any, Any, Any, tuple[str, ...], dict | None]:
    """The one PT2E calibration of the graph the file holds (pixel input, logits; QAT's learned one
    instead), and the ``--keep-float`` graph. Returns (the job describing that graph, int8 graph,
    mixed graph or None, the layers kept float, ``--keep-float auto``'s choice or None)."""
    from edgecnn.converters.base import ConvertJob
    from edgecnn.quantize.ptq import quantize_pt2e

    job = ConvertJob(model=recipe.model, preprocess=built.preprocess, layout=opts.layout,
                     calib_pixels=calib_set.pixels, scratch=scratch, scores="logits")  # SQNR is on logits
    graph, inputs = job.graph(), job.inputs()
    prefix = "model." if graph is not recipe.model else ""
    q = recipe.tuned.quantized if recipe.tuned else quantize_pt2e(
        graph, inputs, method=recipe.method, layout=opts.layout, rounding=opts.rounding, progress=opts.progress)
    keep, auto = opts.keep_float, None
    if keep == (AUTO,):
        keep, auto = _auto_keep_float(built, q, inputs, opts)
    mixed = quantize_pt2e(graph, inputs, method=recipe.method, layout=opts.layout, rounding=opts.rounding,
                          progress=opts.progress, keep_float=[prefix + k for k in keep]) if keep else None
    return job, q, mixed, keep, auto


def _auto_keep_float(built: Any, q: Any, calib_inputs: Any, opts: QuantizeOptions) -> tuple[tuple[str, ...], dict]:
    """``--keep-float auto``: the proposal of the per-layer SQNR on the first calibration images."""
    from edgecnn.quantize.report import layer_sqnr, propose_keep_float

    n = max(opts.layer_images, 8)
    proposal = propose_keep_float(layer_sqnr(q, calib_inputs[:n], opts.progress), _layer_names(built))
    return tuple(p["layer"] for p in proposal), {"chosen_on": f"{min(n, len(calib_inputs))} calibration images",
                                                  "proposal": proposal}


def _layer_names(built: Any) -> list[str]:
    """The names ``--keep-float`` takes: the built model's modules."""
    return [n for n, _ in built.model.named_modules() if n]


def _export_options(opts: QuantizeOptions, built: Any, method: str, *, calib_dir: Path, n: int, quantized: Any,
                    mixed: Any) -> Any:
    """The int8 export of the ready graphs (logits: what the fidelity figures measure)."""
    from edgecnn.pipelines.export import ExportOptions

    out = opts.out if opts.out is not None else Path("exports") / f"{built.name}_{method}"
    return ExportOptions(precisions=("int8",), ios=(opts.io,), layout=opts.layout, calib_data=calib_dir,
                         calib_samples=n, scores="logits", quantized=quantized, mixed=mixed, out=out,
                         progress=opts.progress)


def _fidelity(opts: QuantizeOptions, built: Any, recipe: _Recipe, q: Any, exported: Any, evalset: EvalSet,
              eval_inputs: Any, calibration: str, prefix: str) -> Any:
    """The fidelity report of the int8 file (the first of the export), with where its numbers came from."""
    from edgecnn.quantize.ptq import unquantized_layers

    entry = exported.files[0]
    fid = fidelity_report(built.model, q, Path(entry["path"]), evalset.pixels, built.preprocess, evalset.labels,
                          graph_inputs=eval_inputs, layer_images=opts.layer_images, progress=opts.progress,
                          name=exported.name)
    from edgecnn.quantize.report import propose_keep_float

    fid.extra = {"eval_source": evalset.source, "file": entry["path"], "calibration": calibration,
                 "keep_float_proposal": propose_keep_float(fid.layers, _layer_names(built)),
                 "cle": recipe.cle, "bias_correction": recipe.bias_correction,
                 "rounding": opts.rounding, "adaround": q.adaround,
                 "float_ops": {"in_file": entry["float_ops"], "by_op": entry["float_op_names"],
                               "unannotated_layers": unquantized_layers(q, prefix)}}
    return fid


def _mixed_entry(opts: QuantizeOptions, built: Any, exported: Any, evalset: EvalSet, eval_inputs: Any) -> dict:
    """The mixed-precision file beside the int8 one: size, latency (ms), verification, agreement with float."""
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.quantize.equalize import predict
    from edgecnn.quantize.report import output_metrics

    full = exported.files[0]
    entry = next(f for f in exported.files if "_mixed" in f["suffix"])
    ref = predict(built.model, built.preprocess.normalize(evalset.pixels)).numpy()
    return {"file": entry["path"], "keep_float": list(opts.keep_float), "bytes": entry["bytes"],
            "int8_bytes": full["bytes"], "latency_ms": entry["latency_ms"], "int8_latency_ms": full["latency_ms"],
            "verification": entry["verification"],
            "outputs": output_metrics(ref, TFLiteModel(entry["path"]).predict(eval_inputs), evalset.labels)}


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
