"""The one interface both converter back ends implement, and what they share.

A back end turns a float PyTorch classifier into ``.tflite`` bytes for each requested
:class:`Variant` (precision x int8 interface). It gets a :class:`ConvertJob`: the model, its
:class:`Preprocess`, the input layout of the files (``nhwc``: apps feed HWC camera frames;
``nchw``: PyTorch's), real calibration pixels and a scratch folder. It returns the files' bytes and
any side files (the ``.onnx`` of the ONNX path).

Shared pieces:

- :class:`edgecnn.wrappers.PixelInput`: the model with its normalisation moved inside the graph, fed raw pixel
  values 0-255. A uint8-input file built from it takes camera bytes as they are (input scale 1,
  zero point 0), which is what MediaPipe and most apps feed a uint8 model.
- :func:`set_int_io`: TFLite's own model-interface modifier (shipped in ``ai_edge_litert``) turns
  the float inputs/outputs of a fully quantised model into uint8 or int8 ones.
- :func:`captured_output`: converter logs (C++ and Python) go to a log file unless ``verbose``;
  stdout stays clean for ``--json``.
- :func:`conversion_error`: one line naming the back end, the failing op or layer, and the other
  back end to try.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError
from edgecnn.wrappers import PixelInput, with_scores

PRECISIONS = ("float32", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "uint8", "int8")
LAYOUTS = ("nhwc", "nchw")
# TFLite schema TensorType values taken by the model-interface modifier
_TFLITE_TYPES = {"uint8": 3, "int8": 9}


@dataclass(frozen=True)
class Variant:
    """One output file: a precision and, for int8, the type of its input/output tensors.

    ``mixed``: the int8 file of a ready mixed-precision graph (some layers kept float,
    ``edgecnn quantize --keep-float``)."""

    precision: str
    io: str = "float32"
    mixed: bool = False

    @property
    def suffix(self) -> str:
        """File-name suffix saying exactly what the file is (``dynamic_int8`` is not full integer)."""
        if self.precision == "dynamic":
            return "dynamic_int8"
        if self.precision == "int8":
            return "int8" + ("_mixed" if self.mixed else "") + (f"_{self.io}io" if self.io != "float32" else "")
        return self.precision


def variants(precisions: Sequence[str], ios: Sequence[str], mixed: bool = False) -> list[Variant]:
    """The files to make, in a stable order (int8 once per interface type; ``mixed``: then the
    mixed-precision int8 file once per interface type)."""
    out = []
    for p in PRECISIONS:
        if p in precisions:
            out += [Variant(p, io) for io in IO_TYPES if io in ios] if p == "int8" else [Variant(p)]
    if mixed and "int8" in precisions:
        out += [Variant("int8", io, mixed=True) for io in IO_TYPES if io in ios]
    return out


@dataclass
class ConvertJob:
    """Everything a back end needs. ``calib_pixels``: (N, H, W, C) uint8 real images.

    ``pixel_input`` (default): the files take pixel values 0-255 and normalise inside
    (:class:`PixelInput`); otherwise they take PyTorch's normalised tensor. ``scores``: what the
    files output (:data:`edgecnn.wrappers.SCORES`; the job's default is the model's raw logits, ``edgecnn.export``
    asks for ``softmax``).
    """

    model: nn.Module
    preprocess: Preprocess
    layout: str
    calib_pixels: np.ndarray
    scratch: Path
    verbose: bool = False
    calib_method: str = "histogram"  # activation ranges of full int8 (edgecnn.quantize.ptq.METHODS)
    pixel_input: bool = True
    quantized: Any = None  # a ready int8 PT2E graph (a QuantizedModel): litert converts it as is
    mixed: Any = None  # a ready mixed-precision int8 graph for the ``mixed`` variants
    scores: str = "logits"

    @property
    def log_path(self) -> Path:
        return self.scratch / "converter.log"

    def graph(self) -> nn.Module:
        """The NCHW module to convert: the model, with its normalisation inside for pixel input and
        a softmax after it for ``scores="softmax"``."""
        inner = PixelInput(self.model, self.preprocess) if self.pixel_input else self.model
        return with_scores(inner, self.scores).eval()

    def inputs(self) -> torch.Tensor:
        """The calibration images as :meth:`graph` takes them: (N, C, H, W) float32."""
        if self.pixel_input:
            return torch.as_tensor(self.calib_pixels, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
        return self.preprocess.normalize(self.calib_pixels)

    def in_layout(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW batch in the files' input layout."""
        return x.permute(0, 2, 3, 1).contiguous() if self.layout == "nhwc" else x


@dataclass
class Converted:
    """A converted file's bytes and the seconds its conversion took."""

    variant: Variant
    data: bytes
    seconds: float


class Converter(abc.ABC):
    """A converter back end; ``name`` is its ``--converter`` value, ``other`` the one to suggest."""

    name: str = ""
    other: str = ""
    library: str = ""

    @abc.abstractmethod
    def convert(self, job: ConvertJob, wanted: Sequence[Variant]) -> tuple[list[Converted], dict[str, bytes]]:
        """Convert ``job.model`` into every variant in ``wanted``.

        Returns the files (in the order of ``wanted``) and side files by name suffix (e.g. ``".onnx"``).
        Failures raise :class:`EdgeCNNError` through :func:`conversion_error`.
        """

    @contextlib.contextmanager
    def stage(self, job: ConvertJob, what: str) -> Iterator[None]:
        """Run one conversion step quietly; turn any failure into a one-line error."""
        try:
            with captured_output(job.log_path, job.verbose):
                yield
        except (EdgeCNNError, KeyboardInterrupt):
            raise
        except Exception as exc:  # converters raise anything from RuntimeError to TF's own types
            raise conversion_error(self, what, exc, job.log_path) from None


def set_int_io(float_io_model: bytes, io: str, scratch: Path) -> bytes:
    """A fully quantised model's float I/O changed to ``io`` (``uint8``/``int8``) with TFLite's
    model-interface modifier; ``float32`` returns the bytes unchanged."""
    if io == "float32":
        return float_io_model
    from ai_edge_litert import _pywrap_modify_model_interface as modifier

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        src, dst = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite"
        src.write_bytes(float_io_model)
        status = modifier.modify_model_interface(str(src), str(dst), _TFLITE_TYPES[io], _TFLITE_TYPES[io])
        if status != 0 or not dst.is_file():
            raise EdgeCNNError(f"TFLite's model-interface modifier could not give the int8 model {io} "
                               f"inputs/outputs (status {status})")
        return dst.read_bytes()


@contextlib.contextmanager
def captured_output(log_path: Path, verbose: bool) -> Iterator[None]:
    """Send stdout and stderr, of Python and of native code (file descriptors 1 and 2), to ``log_path``.

    With ``verbose`` the logs go to stderr instead, so stdout stays one JSON object under ``--json``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        target = saved[1] if verbose else log.fileno()
        os.dup2(target, 1)
        os.dup2(target, 2)
        py_target = sys.stderr if verbose else log
        try:
            with contextlib.redirect_stdout(py_target), contextlib.redirect_stderr(py_target):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# Where converters name the op or layer they choke on, most specific first.
_CULPRIT_PATTERNS = (
    r"(aten[.:]+\w+(?:\.\w+)?)",              # torch.export / litert-torch lowering
    r"'(tfl\.\w+)'",                           # TFLite MLIR legalisation
    r"(?:op|operator|node)[ :]+['\"]?([\w./:]+)['\"]?",  # ONNX / onnx2tf node names
    r"(Unsupported \w+ \w+)",
)


def _culprit(text: str) -> str | None:
    for pattern in _CULPRIT_PATTERNS:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            return m.group(1)
    return None


def conversion_error(converter: Converter, what: str, exc: BaseException | str, log_path: Path) -> EdgeCNNError:
    """One line: which back end failed, at which op/layer, why, and what to try instead."""
    message = str(exc).strip() or exc.__class__.__name__
    first = message.splitlines()[0][:300]
    log_tail = log_path.read_text(errors="replace")[-20000:] if log_path.is_file() else ""
    culprit = _culprit(message) or _culprit(log_tail)
    at = f" at {culprit}" if culprit else ""
    return EdgeCNNError(f"{converter.name} back end ({converter.library}) failed while {what}{at}: {first}; "
                        f"try --converter {converter.other}, or --verbose for the converter's log")


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
