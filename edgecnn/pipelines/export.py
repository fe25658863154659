"""``edgecnn.export``: from a model name or checkpoint to a folder of verified, app-ready ``.tflite`` files.

>>> report = edgecnn.export("mobilenet", alpha=0.5, res=160)     # exports/mobilenet_v1_0.50_160/
>>> [(f["name"], f["bytes"], f["verification"]["passed"]) for f in report.files]

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
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from torch import nn

from edgecnn.converters.base import IO_TYPES, LAYOUTS, PRECISIONS, ConvertJob, captured_output, variants
from edgecnn.data.calibration import calibration_images
from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError, VerificationError
from edgecnn.io import atomic_dir, check_output_dir, write_text
from edgecnn.signals import Interrupted, handling
from edgecnn.wrappers import SCORES, with_scores

CONVERTERS = ("litert", "onnx2tf")
DEFAULT_CALIB_SAMPLES = 32
VERIFY_SAMPLES = 24
LATENCY_RUNS, LATENCY_THREADS = 20, 2


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


def _parse_list(value: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise EdgeCNNError(f"{what} takes a comma list of {', '.join(allowed)}; got {bad[0] if bad else 'nothing'!r}")
    return list(dict.fromkeys(items))


def build_model(model_or_name: str | nn.Module | Path, knobs: dict, weights: str | None, num_classes: int | None,
                in_chans: int | None, meta: Any = None) -> tuple[nn.Module, Any, str, bool]:
    """The model to export from a name, an edgecnn checkpoint or a built module (shared with quantize).

    ``meta``: with a built module, the checkpoint metadata it came from (labels, normalisation, data).
    Returns (model, checkpoint meta or None, weights description, trained?).
    """
    from edgecnn.checkpoint import is_checkpoint, read_meta
    from edgecnn.models import get_spec
    from edgecnn.weights import create_model, load_checkpoint

    if isinstance(model_or_name, nn.Module):
        if not hasattr(model_or_name, "edgecnn_config"):
            raise EdgeCNNError("export needs a model built by edgecnn.create_model (it carries model.edgecnn_config)")
        return model_or_name.eval(), meta, weights or "as given (nn.Module)", True
    if is_checkpoint(model_or_name):
        model, meta = load_checkpoint(model_or_name)
        return model.eval(), meta, f"checkpoint {model_or_name}", True
    spec = get_spec(str(model_or_name))
    meta = None
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


def _labels(meta: Any, num_classes: int) -> list[str]:
    if meta is not None and meta.labels and len(meta.labels) == num_classes:
        return list(meta.labels)
    if num_classes == 1000:
        from edgecnn.labels import imagenet_labels

        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]


def latency_ms(path: Path, runs: int = LATENCY_RUNS, threads: int = LATENCY_THREADS) -> float:
    """Median wall time (ms) of one batch-1 invoke on this CPU, after 3 warm-up runs (zeros input).

    A quick figure for the report; ``edgecnn bench`` is the careful measurement.
    """
    from edgecnn.converters.tflite_runtime import load_interpreter

    interp = load_interpreter(path, num_threads=threads)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    times = []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        interp.invoke()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def export(model_or_name: str | nn.Module | Path, *, alpha: float | None = None, phi: float | None = None,
           res: int | None = None, num_classes: int | None = None, in_chans: int | None = None,
           weights: str | None = None, quantize: str | Sequence[str] = ("float32", "int8"),
           converter: str = "litert", io: str | Sequence[str] = ("float32",), layout: str = "nhwc",
           calib_data: str | Path | None = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
           calib_method: str | None = None, pixel_input: bool = True, out: str | Path | None = None,
           verify: bool = True, c_array: bool = False, measure: bool = True, verbose: bool = False,
           progress: bool = True, meta: Any = None, quantized: Any = None, scores: str = "softmax") -> ExportReport:
    """Convert a model to ``.tflite`` files, verify them on real images and write an app-ready folder.

    ``model_or_name``: a zoo name (``"mobilenet"``), an edgecnn checkpoint path, or a model from
    :func:`edgecnn.create_model`. ``quantize``: any of ``float32, float16, dynamic, int8``; ``io``:
    the interfaces of the int8 file (``float32``, ``uint8`` camera bytes, ``int8``); ``layout``:
    ``nhwc`` (apps) or ``nchw`` (PyTorch). ``pixel_input`` (default): every file takes pixel values
    0-255 and normalises inside the graph (what apps and MediaPipe feed); False keeps PyTorch's
    normalised input (float files; MediaPipe refuses per-channel normalisation). ``calib_method``: activation ranges of the litert back
    end's int8 (:data:`edgecnn.quantize.methods.METHODS`; default the quantiser's
    ``DEFAULT_METHOD``; onnx2tf always uses TFLite's min/max).
    ``meta``: with an ``nn.Module``, the checkpoint metadata (labels, normalisation, training data) it
    carries, e.g. for a checkpoint's model after cross-layer equalisation. ``quantized``: an int8
    PT2E graph of this model already made (quantisation-aware training,
    :class:`edgecnn.quantize.ptq.QuantizedModel` with the same layout and pixel input) that the litert
    back end converts instead of calibrating one. ``scores``: what the files output, ``softmax``
    (default: class probabilities in [0, 1] summing to 1, the softmax inside the graph, as Keras
    Applications' models) or ``logits`` (the classifier's raw outputs); recorded in the files'
    metadata and the report, and verification compares with the same PyTorch wrapper.
    Without ``out`` the folder is ``exports/<name>/``.
    Raises :class:`EdgeCNNError` for bad input or a failed conversion and
    :class:`VerificationError` (after writing the folder) when a file disagrees with PyTorch.
    """
    precisions = _parse_list(quantize, PRECISIONS, "--quantize")
    ios = _parse_list(io, IO_TYPES, "--io")
    layout = _parse_list(layout, LAYOUTS, "--layout")[0]
    converter = _parse_list(converter, CONVERTERS, "--converter")[0]
    scores = _parse_list(scores, SCORES, "--scores")[0]
    if not isinstance(calib_samples, int) or calib_samples < 1:
        raise EdgeCNNError(f"--calib-samples must be an integer >= 1, got {calib_samples!r}")
    from edgecnn.quantize.methods import DEFAULT_METHOD, METHODS, MIN_CALIB_IMAGES

    calib_method = calib_method or DEFAULT_METHOD
    if calib_method not in METHODS:
        raise EdgeCNNError(f"--calib-method takes one of {', '.join(METHODS)}; got {calib_method!r}")
    if converter == "litert" and "int8" in precisions:
        if calib_samples < MIN_CALIB_IMAGES[calib_method]:
            raise EdgeCNNError(f"--calib-method {calib_method} needs --calib-samples >= "
                               f"{MIN_CALIB_IMAGES[calib_method]}, got {calib_samples}")
    if not pixel_input and "uint8" in ios and "int8" in precisions:
        raise EdgeCNNError("--io uint8 files take camera bytes, so they need --input pixels")
    if quantized is not None and (converter != "litert" or quantized.layout != layout or not pixel_input):
        raise EdgeCNNError("a ready int8 graph (QAT) converts with the litert back end, in its own layout, "
                           "with pixel input")
    if quantized is not None and scores != "logits":
        raise EdgeCNNError("a ready int8 graph (QAT) outputs logits: export it with scores='logits'")
    if calib_data is not None and not Path(calib_data).expanduser().is_dir():
        raise EdgeCNNError(f"--calib-data {calib_data} does not exist or is not a directory")
    if out is not None:
        check_output_dir(out)  # before any work; atomic_dir checks again when it starts
    stages = _Stages(progress)
    with handling(stages.on_signal):
        return _export(stages, model_or_name, alpha=alpha, phi=phi, res=res, num_classes=num_classes,
                       in_chans=in_chans, weights=weights, precisions=precisions, converter=converter, ios=ios,
                       layout=layout, calib_data=calib_data, calib_samples=calib_samples,
                       calib_method=calib_method, pixel_input=pixel_input, out=out, verify=verify,
                       c_array=c_array, measure=measure, verbose=verbose, meta=meta, quantized=quantized,
                       scores=scores)


def _export(stages: _Stages, model_or_name: Any, *, alpha: float | None, phi: float | None, res: int | None,
            num_classes: int | None, in_chans: int | None, weights: str | None, precisions: list[str],
            converter: str, ios: list[str], layout: str, calib_data: Any, calib_samples: int,
            calib_method: str, pixel_input: bool, out: Any, verify: bool, c_array: bool, measure: bool,
            verbose: bool, meta: Any, quantized: Any, scores: str) -> ExportReport:
    """:func:`export` after its arguments are checked."""
    from edgecnn.models import canonical_name
    from edgecnn.stats import model_stats

    with stages("build", "model, parameters and MACs"):
        knobs = {k: v for k, v in (("alpha", alpha), ("phi", phi)) if v is not None}
        model, meta, weights_desc, trained = build_model(model_or_name, knobs, weights, num_classes, in_chans, meta)
        config = model.edgecnn_config
        if res is None:
            res = meta.preprocess.res if meta is not None else config.default_res
        res = config.spec.check_res(res)
        # the checkpoint's recorded normalisation and crop, at the resolution asked for
        preprocess = dataclasses.replace(meta.preprocess, res=res) if meta is not None else \
            Preprocess.for_model(model, res)
        stats = model_stats(model, res=res)
        name = canonical_name(config, res)
    out_dir = Path(out) if out is not None else Path("exports") / name
    wanted = variants(precisions, ios)
    report = ExportReport(
        model=config.name, name=name, knobs=dict(config.knobs), res=res, num_classes=config.num_classes,
        in_chans=config.in_chans, params=stats.params, macs=stats.macs, weights=weights_desc, trained=trained,
        converter=converter, layout=layout, preprocess=preprocess.to_dict(), calibration=None,
        input=("pixel values 0-255, normalised inside the graph" if pixel_input
               else "normalised tensor ((pixel / 255 - mean) / std)"),
        out_dir=str(out_dir), scores=scores)
    if not trained:
        report.warnings.append("random weights: sizes and latency are real, accuracy numbers are meaningless")
        stages.warn(report.warnings[-1])

    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="edgecnn-export-") as scratch:
        with stages("calibrate", "choosing real images"):
            calib = calibration_images(preprocess, calib_samples, calib_data=calib_data,
                                       checkpoint_data=meta.data if meta is not None else None)
            checks = calibration_images(preprocess, VERIFY_SAMPLES, calib_data=calib_data,
                                        checkpoint_data=meta.data if meta is not None else None, seed=1)
        if any(v.precision == "int8" for v in wanted):
            report.calibration = calib.to_dict()
        if calib.kind == "synthetic":
            report.warnings.append(calib.source)
            stages.warn("calibrating on SYNTHETIC images: int8 accuracy is unknown (pass --calib-data DIR)")

        job = ConvertJob(model=model, preprocess=preprocess, layout=layout, calib_pixels=calib.pixels,
                         scratch=Path(scratch), verbose=verbose, calib_method=calib_method,
                         pixel_input=pixel_input, quantized=quantized, scores=scores)
        with stages("convert", f"{converter}: {', '.join(v.suffix for v in wanted)}"):
            converted, extra = _backend(converter).convert(job, wanted)
            paths = _write_files(tmp, name, converted, extra, config, preprocess, meta, report, pixel_input)
        verifications = {}
        if verify:
            with stages("verify", f"{len(paths)} files vs PyTorch on {len(checks.pixels)} images"), \
                    captured_output(job.log_path, verbose):
                from edgecnn.converters.verify import is_constant, reference_logits, verify_file

                ref = reference_logits(with_scores(model, scores), preprocess, checks.pixels)
                if is_constant(ref):
                    report.warnings.append(f"the float model gives the same output for all {len(ref)} "
                                           f"verification images (diverged training?): no file is judged")
                for c, path in zip(converted, paths):
                    verifications[path.name] = verify_file(path, c.variant.precision, ref, checks.pixels,
                                                           preprocess, trained=trained)
        with stages("measure", "op counts" + (" and CPU latency" if measure else "")), \
                captured_output(job.log_path, verbose):
            report.files = [_file_entry(out_dir, p, c, verifications.get(p.name), measure)
                            for c, p in zip(converted, paths)]
            report.verification_images = checks.source if verify else None
        with stages("write", "labels, report" + (", C array" if c_array else "")):
            if c_array:
                from edgecnn.converters.c_array import write_c_array

                write_c_array(paths[-1], tmp)
                report.extra_files += ["model_data.h", "model_data.cc"]
            report.stages = dict(stages.times)
            write_text(tmp / "report.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    for entry in report.files:
        if entry["verification"] is not None and not entry["verification"]["passed"]:
            from edgecnn.converters.verify import Verification, raise_if_failed

            try:
                raise_if_failed(entry["path"], Verification(**entry["verification"]))
            except VerificationError as exc:
                exc.report = report  # the CLI's --json still prints it
                raise
    return report


def _backend(name: str):
    if name == "onnx2tf":
        from edgecnn.converters.onnx2tf import ONNX2TFConverter

        return ONNX2TFConverter()
    from edgecnn.converters.litert import LiteRTConverter

    return LiteRTConverter()


def _write_files(folder: Path, name: str, converted: list, extra: dict[str, bytes], config: Any,
                 preprocess: Preprocess, meta: Any, report: ExportReport, pixel_input: bool) -> list[Path]:
    """Each file with TFLite metadata (labels, normalisation) embedded; labels.txt; side files."""
    from edgecnn.converters.metadata import add_metadata, pixel_input_normalization
    from edgecnn.io import write_bytes
    from edgecnn.labels import write_labels

    labels = _labels(meta, config.num_classes)
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
        "latency_ms": round(latency_ms(path), 3) if measure else None,
        "latency_method": (f"median of {LATENCY_RUNS} invokes, {LATENCY_THREADS} threads, ai-edge-litert"
                           if measure else None),
    }
