"""``edgecnn.export``: from a model name or checkpoint to a folder of verified, app-ready ``.tflite`` files.

>>> report = edgecnn.export("mobilenet", alpha=0.5, res=160)     # exports/mobilenet_v1_0.50_160/
>>> [(f["name"], f["bytes"], f["verification"]["passed"]) for f in report.files]
>>> opts = ExportOptions(precisions="int8", ios="uint8", calib_data="photos/")   # checked here, once
>>> edgecnn.export(ModelRequest("googlenet", knobs={"aux_logits": True}, res=224), options=opts)

Stages (each timed in ``report.stages``, seconds): build (model + params/MACs), calibrate (choose
real images), convert (back end), verify (each file vs PyTorch on real images), measure (CPU latency
and op counts), write. The output folder is built in a temporary sibling and swapped into place at
the end (:func:`edgecnn.io.atomic_dir`): an error, Ctrl-C, SIGTERM or SIGHUP leaves the previous
folder untouched and no partial file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from torch import nn

from edgecnn.benchmarks.measure import Protocol
from edgecnn.converters.base import ConvertJob, captured_output, variants
from edgecnn.converters.registry import BACKENDS, IO_TYPES, LAYOUTS, PRECISIONS, backend
from edgecnn.data.calibration import calibration_images
from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError, VerificationError
from edgecnn.io import atomic_dir, check_output_dir, write_text
from edgecnn.signals import Interrupted, handling
from edgecnn.wrappers import SCORES, with_scores

DEFAULT_CALIB_SAMPLES = 32
VERIFY_SAMPLES = 24
LATENCY_THREADS = 2
# the report's quick latency: the benchmark harness's measurement with few runs (edgecnn bench: many)
QUICK = Protocol(num_runs=20, min_secs=0.0, warmup_runs=3, warmup_min_secs=0.0)
LATENCY_METHOD = (f"median of {QUICK.num_runs} invokes after {QUICK.warmup_runs} warm-up, {LATENCY_THREADS} "
                  f"threads, ai-edge-litert (edgecnn.benchmarks.measure)")
OPTION_KEYWORDS = {"quantize": "precisions", "io": "ios"}  # export()'s keywords for two ExportOptions fields


@dataclass
class ExportReport:
    """What :func:`export` made. ``files``: one dict per ``.tflite`` (see :func:`_file_entry`);
    ``stages``: seconds per stage; ``macs``: multiply-accumulates per image."""

    model: str
    name: str
    knobs: dict[str, Any]
    res: int
    num_classes: int
    in_chans: int
    params: int
    macs: int
    weights: str
    trained: bool
    converter: str
    layout: str
    input: str
    preprocess: dict
    calibration: dict | None
    out_dir: str
    verification_images: str | None = None
    scores: str = "softmax"  # what the files output: softmax probabilities or raw logits (SCORES)
    files: list[dict] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def passed(self) -> bool:
        return all(f["verification"] is None or f["verification"]["passed"] for f in self.files)


def _parse_list(value: str | Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise EdgeCNNError(f"{what} takes a comma list of {', '.join(allowed)}; got {bad[0] if bad else 'nothing'!r}")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class ExportOptions:
    """Every choice of an export except the model, checked once when made (one-line :class:`EdgeCNNError`).

    ``precisions``: any of ``float32, float16, dynamic, int8`` (a list or a comma string); ``ios``:
    the interfaces of the int8 file (``float32``, ``uint8`` camera bytes, ``int8``); ``layout``:
    ``nhwc`` (apps) or ``nchw`` (PyTorch); ``converter``: a back end of
    :data:`edgecnn.converters.registry.BACKENDS`. ``calib_method``: activation ranges of int8 on a
    back end that offers a choice (litert: :data:`edgecnn.quantize.methods.METHODS`, default
    ``DEFAULT_METHOD``; onnx2tf calibrates its own way). ``pixel_input`` (default): every file takes
    pixel values 0-255 and normalises inside the graph (what apps and MediaPipe feed); False keeps
    PyTorch's normalised input. ``scores``: ``softmax`` (class probabilities inside the graph) or
    ``logits``. ``measure``: the quick CPU latency of each file (ms, :mod:`edgecnn.benchmarks.measure`).
    ``quantized``: an int8 PT2E graph of the model already made
    (:class:`edgecnn.quantize.ptq.QuantizedModel`: QAT, or ``edgecnn quantize``'s calibrated graph;
    same layout, pixel input, logits) that a back end with ``ready_int8`` converts instead of
    calibrating; ``mixed``: a second such graph with some layers kept float, exported, verified and
    reported beside it as ``_int8_mixed``. Without ``out`` the folder is ``exports/<name>/``.
    """

    precisions: str | Sequence[str] = ("float32", "int8")
    ios: str | Sequence[str] = ("float32",)
    layout: str = "nhwc"
    converter: str = "litert"
    calib_data: str | Path | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_method: str | None = None
    pixel_input: bool = True
    scores: str = "softmax"
    verify: bool = True
    measure: bool = True
    c_array: bool = False
    verbose: bool = False
    progress: bool = True
    out: str | Path | None = None
    quantized: Any = None
    mixed: Any = None

    def __post_init__(self) -> None:
        normal = {"precisions": _parse_list(self.precisions, PRECISIONS, "--quantize"),
                  "ios": _parse_list(self.ios, IO_TYPES, "--io"),
                  "layout": _parse_list(self.layout, LAYOUTS, "--layout")[0],
                  "converter": _parse_list(self.converter, tuple(BACKENDS), "--converter")[0],
                  "scores": _parse_list(self.scores, SCORES, "--scores")[0]}
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        if isinstance(self.calib_samples, bool) or not isinstance(self.calib_samples, int) or self.calib_samples < 1:
            raise EdgeCNNError(f"--calib-samples must be an integer >= 1, got {self.calib_samples!r}")
        self._check_backend()
        if not self.pixel_input and "uint8" in self.ios and "int8" in self.precisions:
            raise EdgeCNNError("--io uint8 files take camera bytes, so they need --input pixels")
        self._check_ready_graphs()
        if self.calib_data is not None and not Path(self.calib_data).expanduser().is_dir():
            raise EdgeCNNError(f"--calib-data {self.calib_data} does not exist or is not a directory")
        if self.out is not None:
            check_output_dir(self.out)  # before any work; atomic_dir checks again when it starts

    @property
    def int8_method(self) -> str | None:
        """The activation-range method of the back end's own int8 calibration (None: its own way)."""
        return backend(self.converter).calib_method(self.calib_method)

    def _check_backend(self) -> None:
        from edgecnn.quantize.methods import MIN_CALIB_IMAGES

        row = backend(self.converter)
        if self.layout not in row.layouts or not set(self.precisions) <= set(row.precisions):
            raise EdgeCNNError(f"the {row.name} back end makes {', '.join(row.precisions)} files in "
                               f"{' or '.join(row.layouts)} layout")
        method = self.int8_method
        need = MIN_CALIB_IMAGES.get(method, 1) if "int8" in self.precisions and self.quantized is None else 1
        if self.calib_samples < need:
            raise EdgeCNNError(f"--calib-method {method} needs --calib-samples >= {need}, got {self.calib_samples}")

    def _check_ready_graphs(self) -> None:
        for graph in (self.quantized, self.mixed):
            if graph is None:
                continue
            ready = [b.name for b in BACKENDS.values() if b.ready_int8]
            if self.converter not in ready or graph.layout != self.layout or not self.pixel_input:
                raise EdgeCNNError(f"a ready int8 graph converts with the {' or '.join(ready)} back end, in its own "
                                   f"layout, with pixel input")
            if self.scores != "logits":
                raise EdgeCNNError("a ready int8 graph outputs logits: export it with scores='logits'")
            if "int8" not in self.precisions:
                raise EdgeCNNError("a ready int8 graph makes int8 files: add int8 to --quantize")
        if self.mixed is not None and self.quantized is None:
            raise EdgeCNNError("a mixed-precision graph is exported beside a ready int8 graph (quantized=)")


@dataclass(frozen=True)
class ModelRequest:
    """Which model to export: ``model`` is a zoo name, an edgecnn checkpoint path or a module from
    :func:`edgecnn.create_model`; ``knobs`` its family's knobs (``{"alpha": 0.5}``, ``{"aux_logits":
    True}``: checked by the registry); ``res`` the square input in pixels (default: the
    checkpoint's, else the model's); ``weights`` ``"imagenet"`` or a file; ``meta``: with a module,
    the checkpoint metadata (labels, normalisation, training data) it came from."""

    model: str | Path | nn.Module
    knobs: Mapping[str, Any] = field(default_factory=dict)
    res: int | None = None
    num_classes: int | None = None
    in_chans: int | None = None
    weights: str | None = None
    meta: Any = None


@dataclass
class BuiltModel:
    """A :class:`ModelRequest` made real: the eval-mode module, its checkpoint metadata (or None),
    where its weights came from, the input resolution (px) and preprocessing, the file-name stem."""

    model: nn.Module
    meta: Any
    weights: str
    trained: bool
    res: int
    preprocess: Preprocess
    name: str

    @property
    def config(self) -> Any:
        return self.model.edgecnn_config


def build_model(request: ModelRequest) -> BuiltModel:
    """The model of ``request`` (shared by export and quantize); bad names, knobs or files raise one line."""
    from edgecnn.models import canonical_name

    model, meta, weights, trained = _load_model(request)
    config = model.edgecnn_config
    res = request.res if request.res is not None else meta.preprocess.res if meta is not None else config.default_res
    res = config.spec.check_res(res)
    # the checkpoint's recorded normalisation and crop, at the resolution asked for
    preprocess = dataclasses.replace(meta.preprocess, res=res) if meta is not None else Preprocess.for_model(model, res)
    return BuiltModel(model, meta, weights, trained, res, preprocess, canonical_name(config, res))


def _load_model(request: ModelRequest) -> tuple[nn.Module, Any, str, bool]:
    """(model, checkpoint meta or None, weights description, trained?)."""
    from edgecnn.checkpoint import is_checkpoint, read_meta
    from edgecnn.models import get_spec
    from edgecnn.weights import create_model, load_checkpoint

    source, knobs = request.model, dict(request.knobs)
    if isinstance(source, nn.Module):
        if not hasattr(source, "edgecnn_config"):
            raise EdgeCNNError("export needs a model built by edgecnn.create_model (it carries model.edgecnn_config)")
        _check_fixed_knobs(source, knobs, "the given model")
        return source.eval(), request.meta, request.weights or "as given (nn.Module)", True
    if is_checkpoint(source):
        model, meta = load_checkpoint(source)
        _check_fixed_knobs(model, knobs, f"checkpoint {source}")
        return model.eval(), meta, f"checkpoint {source}", True
    spec = get_spec(str(source))
    meta, weights, num_classes, in_chans = None, request.weights, request.num_classes, request.in_chans
    if weights is not None and str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EdgeCNNError(f"weights file {path} does not exist; pass 'imagenet' or a .pth/.pt/.safetensors "
                               f"file or an edgecnn checkpoint")
        if is_checkpoint(path):
            meta = read_meta(path)
            if meta.model != spec.name:
                raise EdgeCNNError(f"{path} is a checkpoint of {meta.model}, not {spec.name}")
            knobs = {**meta.knobs, **knobs}
            num_classes, in_chans = num_classes or meta.num_classes, in_chans or meta.in_chans
    model = create_model(spec.name, num_classes=num_classes, in_chans=in_chans, weights=weights, **knobs)
    described = "random initialisation" if weights is None else str(weights)
    return model.eval(), meta, described, weights is not None


def _check_fixed_knobs(model: nn.Module, knobs: dict[str, Any], what: str) -> None:
    """A built model's knobs are what they are: knobs that would change them raise (unknown ones
    with the registry's error)."""
    from edgecnn.models.registry import resolve_knobs

    config = model.edgecnn_config
    wanted = resolve_knobs(config.spec, **knobs)
    changed = sorted(k for k, v in knobs.items() if v is not None and wanted[k] != config.knobs.get(k))
    if changed:
        have = ", ".join(f"{k}={config.knobs.get(k)}" for k in changed)
        raise EdgeCNNError(f"{what} is built with {have}; its knobs cannot change (drop {', '.join(changed)})")


def model_labels(meta: Any, num_classes: int) -> list[str] | None:
    """The model's class names: the checkpoint's, ImageNet's for 1000 classes, else None."""
    if meta is not None and meta.labels and len(meta.labels) == num_classes:
        return list(meta.labels)
    if num_classes == 1000:
        from edgecnn.labels import imagenet_labels

        return imagenet_labels()
    return None


def _labels(meta: Any, num_classes: int) -> list[str]:
    """The names written into the files: :func:`model_labels`, else ``class_0``, ``class_1``, ..."""
    return model_labels(meta, num_classes) or [f"class_{i}" for i in range(num_classes)]


def quick_latency_ms(path: Path, threads: int = LATENCY_THREADS) -> float:
    """Median wall time (ms) of one batch-1 invoke on this CPU: the benchmark harness's method
    (:func:`edgecnn.benchmarks.measure.measure`) with :data:`QUICK` runs, in this process.

    A quick figure for the report; ``edgecnn bench`` is the careful measurement.
    """
    from edgecnn.benchmarks.measure import interpreter_runner, measure
    from edgecnn.converters.tflite_runtime import load_interpreter

    return measure(lambda: interpreter_runner(load_interpreter(path, num_threads=threads)), QUICK)["median_ms"]


class _Elapsed:
    """Status text ending in the seconds since it was made; rich renders it afresh at every frame."""

    def __init__(self, markup: str) -> None:
        self.markup, self.start = markup, time.perf_counter()

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text.from_markup(f"{self.markup}  [dim]{time.perf_counter() - self.start:.0f} s[/]")


@contextlib.contextmanager
def _status(console: Any, markup: str) -> Iterator[Any]:
    """A spinner with elapsed seconds, drawn by rich's refresh thread on a duplicate of stderr's
    file descriptor: converters' logs are captured by pointing fd 2 and ``sys.stderr`` at a log
    file (:func:`captured_output`), which would otherwise swallow every frame after the first.
    Yields the rich ``Status``."""
    from rich.console import Console

    try:
        fd = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):  # stderr replaced by a non-file
        with console.status(_Elapsed(markup)) as status:
            yield status
        return
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as err, \
            Console(file=err, quiet=console.quiet).status(_Elapsed(markup)) as status:
        yield status


class _Stages:
    """Stage timer with a rich status line on stderr; ``show=False`` keeps the terminal quiet.

    A Ctrl-C (or SIGTERM, SIGHUP) is also remembered: some converter internals swallow
    ``KeyboardInterrupt`` (or turn it into their own error), so the end of every stage raises it again.
    """

    def __init__(self, show: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=not show)
        self.times: dict[str, float] = {}
        self.interrupted: int | None = None  # the signal that stopped the export

    def on_signal(self, signum: int) -> None:
        """The export's handler of SIGINT, SIGTERM and SIGHUP: remember the signal, then stop."""
        self.interrupted = signum
        raise Interrupted(signum)

    @contextlib.contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            with _status(self.console, f"[bold]{name}[/]: {what}"):
                yield
        except BaseException:
            if self.interrupted:  # a converter turned the interrupt into its own error
                raise Interrupted(self.interrupted) from None
            raise
        if self.interrupted:
            raise Interrupted(self.interrupted)
        self.times[name] = round(time.perf_counter() - t0, 3)
        self.console.print(f"[green]done[/] {name:<9} {self.times[name]:6.1f} s  {what}")

    def warn(self, text: str) -> None:
        self.console.print(f"[bold red]WARNING:[/] {text}")


def export(model: str | Path | nn.Module | ModelRequest | BuiltModel, *, options: ExportOptions | None = None,
           knobs: Mapping[str, Any] | None = None, res: int | None = None, num_classes: int | None = None,
           in_chans: int | None = None, weights: str | None = None, meta: Any = None,
           **keywords: Any) -> ExportReport:
    """Convert a model to ``.tflite`` files, verify them on real images and write an app-ready folder.

    ``model``: a zoo name (``"mobilenet"``), an edgecnn checkpoint path, a model from
    :func:`edgecnn.create_model`, a :class:`ModelRequest`, or a :class:`BuiltModel` (from
    :func:`build_model`, exported as it is). ``options``: an :class:`ExportOptions`;
    its fields may also be given as keywords (``quantize=`` and ``io=`` stand for ``precisions`` and
    ``ios``: ``export("mobilenet", quantize="int8", io="uint8", out="app/model")``), and override
    ``options``. Any other keyword is a model knob (``alpha=0.5``, ``phi=1``, ``aux_logits=True``),
    merged over ``knobs`` and checked by the model registry. ``meta``: with an ``nn.Module``, the
    checkpoint metadata (labels, normalisation, training data) it carries.
    Raises :class:`EdgeCNNError` for bad input or a failed conversion and
    :class:`VerificationError` (after writing the folder) when a file disagrees with PyTorch.
    """
    request, options = export_request(model, options, knobs=knobs, res=res, num_classes=num_classes,
                                      in_chans=in_chans, weights=weights, meta=meta, **keywords)
    stages = _Stages(options.progress)
    with handling(stages.on_signal):
        return _export(stages, request, options)


def export_request(model: str | Path | nn.Module | ModelRequest | BuiltModel, options: ExportOptions | None = None, *,
                   knobs: Mapping[str, Any] | None = None,
                   **keywords: Any) -> tuple[ModelRequest | BuiltModel, ExportOptions]:
    """:func:`export`'s arguments as one :class:`ModelRequest` (or the given :class:`BuiltModel`) and
    one checked :class:`ExportOptions`."""
    option_names = {f.name for f in dataclasses.fields(ExportOptions)}
    model_names = {f.name for f in dataclasses.fields(ModelRequest)} - {"model", "knobs"}
    given = {OPTION_KEYWORDS.get(k, k): v for k, v in keywords.items()}
    chosen = {k: v for k, v in given.items() if k in option_names}
    options = dataclasses.replace(options, **chosen) if options is not None else ExportOptions(**chosen)
    about_model = {k: v for k, v in given.items() if k in model_names and v is not None}
    knobs = {**(knobs or {}), **{k: v for k, v in given.items()
                                 if k not in option_names and k not in model_names and v is not None}}
    if isinstance(model, BuiltModel):
        if knobs or about_model:
            raise EdgeCNNError("a built model (BuiltModel) is exported as it is: give no knobs, res or weights")
        return model, options
    if isinstance(model, ModelRequest):
        if knobs:
            about_model["knobs"] = {**model.knobs, **knobs}
        return dataclasses.replace(model, **about_model), options
    return ModelRequest(model, knobs=knobs, **about_model), options


def _export(stages: _Stages, request: ModelRequest | BuiltModel, opts: ExportOptions) -> ExportReport:
    """:func:`export` after its arguments are checked."""
    with stages("build", "model, parameters and MACs"):
        built = request if isinstance(request, BuiltModel) else build_model(request)
        report = _new_report(built, opts)
    if not built.trained:
        report.warnings.append("random weights: sizes and latency are real, accuracy numbers are meaningless")
        stages.warn(report.warnings[-1])
    wanted = variants(opts.precisions, opts.ios, mixed=opts.mixed is not None)
    with atomic_dir(Path(report.out_dir)) as tmp, tempfile.TemporaryDirectory(prefix="edgecnn-export-") as scratch:
        calib, checks = _images(stages, built, opts, report, wanted)
        job = ConvertJob(model=built.model, preprocess=built.preprocess, layout=opts.layout, calib_pixels=calib.pixels,
                         scratch=Path(scratch), verbose=opts.verbose, calib_method=opts.int8_method,
                         pixel_input=opts.pixel_input, quantized=opts.quantized, mixed=opts.mixed, scores=opts.scores)
        with stages("convert", f"{opts.converter}: {', '.join(v.suffix for v in wanted)}"):
            converted, extra = backend(opts.converter).load().convert(job, wanted)
            paths = _write_files(tmp, built, converted, extra, report, opts.pixel_input)
        verifications = _verify(stages, job, built, converted, paths, checks, report) if opts.verify else {}
        with stages("measure", "op counts" + (" and CPU latency" if opts.measure else "")), \
                captured_output(job.log_path, opts.verbose):
            report.files = [_file_entry(Path(report.out_dir), p, c, verifications.get(p.name), opts.measure)
                            for c, p in zip(converted, paths)]
            report.verification_images = checks.source if opts.verify else None
        with stages("write", "labels, report" + (", C array" if opts.c_array else "")):
            if opts.c_array:
                from edgecnn.converters.c_array import write_c_array

                write_c_array(paths[-1], tmp)
                report.extra_files += ["model_data.h", "model_data.cc"]
            report.stages = dict(stages.times)
            write_text(tmp / "report.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    _raise_if_failed(report)
    return report


def _new_report(built: BuiltModel, opts: ExportOptions) -> ExportReport:
    """The report of ``built``'s export before any file is made (sizes and MACs measured here)."""
    from edgecnn.stats import model_stats

    config, stats = built.config, model_stats(built.model, res=built.res)
    out_dir = Path(opts.out) if opts.out is not None else Path("exports") / built.name
    return ExportReport(
        model=config.name, name=built.name, knobs=dict(config.knobs), res=built.res, num_classes=config.num_classes,
        in_chans=config.in_chans, params=stats.params, macs=stats.macs, weights=built.weights, trained=built.trained,
        converter=opts.converter, layout=opts.layout, preprocess=built.preprocess.to_dict(), calibration=None,
        input=("pixel values 0-255, normalised inside the graph" if opts.pixel_input
               else "normalised tensor ((pixel / 255 - mean) / std)"),
        out_dir=str(out_dir), scores=opts.scores)


def _images(stages: _Stages, built: BuiltModel, opts: ExportOptions, report: ExportReport,
            wanted: Sequence[Any]) -> tuple[Any, Any]:
    """The calibration images and the (other) verification images, recorded in ``report``."""
    data = built.meta.data if built.meta is not None else None
    with stages("calibrate", "choosing real images"):
        calib = calibration_images(built.preprocess, opts.calib_samples, calib_data=opts.calib_data,
                                   checkpoint_data=data)
        checks = calibration_images(built.preprocess, VERIFY_SAMPLES, calib_data=opts.calib_data,
                                    checkpoint_data=data, seed=1)
    if any(v.precision == "int8" for v in wanted):
        report.calibration = calib.to_dict()
    if calib.kind == "synthetic":
        report.warnings.append(calib.source)
        stages.warn("calibrating on SYNTHETIC images: int8 accuracy is unknown (pass --calib-data DIR)")
    return calib, checks


def _verify(stages: _Stages, job: ConvertJob, built: BuiltModel, converted: list, paths: list[Path], checks: Any,
            report: ExportReport) -> dict[str, Any]:
    """Each file against the PyTorch model (wrapped like the files) on the verification images, by file name."""
    from edgecnn.converters.verify import is_constant, reference_logits, verify_file

    with stages("verify", f"{len(paths)} files vs PyTorch on {len(checks.pixels)} images"), \
            captured_output(job.log_path, job.verbose):
        ref = reference_logits(with_scores(built.model, report.scores), built.preprocess, checks.pixels)
        if is_constant(ref):
            report.warnings.append(f"the float model gives the same output for all {len(ref)} "
                                   f"verification images (diverged training?): no file is judged")
        return {path.name: verify_file(path, c.variant.precision, ref, checks.pixels, built.preprocess,
                                       trained=built.trained) for c, path in zip(converted, paths)}


def _raise_if_failed(report: ExportReport) -> None:
    """:class:`VerificationError` (carrying ``report`` for the CLI's ``--json``) for the first failed file."""
    for entry in report.files:
        if entry["verification"] is not None and not entry["verification"]["passed"]:
            from edgecnn.converters.verify import Verification, raise_if_failed

            try:
                raise_if_failed(entry["path"], Verification(**entry["verification"]))
            except VerificationError as exc:
                exc.report = report
                raise


def _write_files(folder: Path, built: BuiltModel, converted: list, extra: dict[str, bytes], report: ExportReport,
                 pixel_input: bool) -> list[Path]:
    """Each file with TFLite metadata (labels, normalisation) embedded; labels.txt; side files."""
    from edgecnn.converters.metadata import add_metadata, pixel_input_normalization
    from edgecnn.io import write_bytes
    from edgecnn.labels import write_labels

    config, preprocess, name = built.config, built.preprocess, built.name
    labels = _labels(built.meta, config.num_classes)
    mean, std = pixel_input_normalization(preprocess.in_chans) if pixel_input else (preprocess.mean, preprocess.std)
    paths = []
    for c in converted:
        data = add_metadata(c.data, labels=labels, mean=mean, std=std, scores=report.scores,
                            in_chans=preprocess.in_chans, name=name,
                            description=f"{config.name} {c.variant.suffix}, {preprocess.res}x{preprocess.res} "
                                        f"input, exported by edgecnn", version="1")
        paths.append(write_bytes(folder / f"{name}_{c.variant.suffix}.tflite", data))
    for suffix, data in extra.items():
        write_bytes(folder / f"{name}{suffix}", data)
        report.extra_files.append(f"{name}{suffix}")
    write_labels(folder / "labels.txt", labels)
    report.extra_files.append("labels.txt")
    return paths


def _file_entry(out_dir: Path, path: Path, converted: Any, verification: Any, measure: bool) -> dict:
    """The report's record of one file: sizes, I/O, op counts, verification, latency (ms)."""
    from edgecnn.converters.inspect import inspect_tflite

    info = inspect_tflite(path)
    return {
        "path": str(out_dir / path.name), "name": path.name, "precision": converted.variant.precision,
        "suffix": converted.variant.suffix, "io": converted.variant.io, "bytes": info["bytes"],
        "inputs": info["inputs"], "outputs": info["outputs"], "ops": info["ops"],
        "op_count": info["op_count"], "transpose": info["transpose"], "quantize": info["quantize"],
        "dequantize": info["dequantize"], "float_ops": info["float_ops"],
        "float_op_names": info["float_op_names"], "constant_types": info["constant_types"],
        "inspected_precision": info["precision"], "metadata": info["metadata"]["present"],
        "convert_s": round(converted.seconds, 3),
        "verification": verification.to_dict() if verification is not None else None,
        "latency_ms": round(quick_latency_ms(path), 3) if measure else None,
        "latency_method": LATENCY_METHOD if measure else None,
    }
