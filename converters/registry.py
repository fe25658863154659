"""The converter table: every back end with what it takes, in one place.

The CLI's ``--converter``/``--layout``/``--calib-method`` choices, :class:`~edgecnn.pipelines.export.ExportOptions`'
compatibility checks and the lookup of the back end that converts all read :data:`BACKENDS`. A new
back end is one module with a :class:`~edgecnn.converters.base.Converter` subclass plus one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgecnn.converters.base import IO_TYPES, LAYOUTS, PRECISIONS  # noqa: F401  (the vocabulary, for callers)
from edgecnn.errors import EdgeCNNError
from edgecnn.quantize.methods import DEFAULT_METHOD, METHODS


@dataclass(frozen=True)
class Backend:
    """One back end. ``calib_methods``: the activation-range methods its int8 lets the user pick
    (empty: it calibrates its own way, ``calibration``); ``ready_int8``: it converts an int8 PT2E
    graph made beforehand (QAT, or ``edgecnn quantize``'s calibrated graph) instead of calibrating."""

    name: str
    summary: str
    load: Callable[[], Any]  # -> the Converter instance
    precisions: tuple[str, ...] = PRECISIONS
    layouts: tuple[str, ...] = LAYOUTS
    calib_methods: tuple[str, ...] = ()
    default_calib_method: str | None = None
    calibration: str = ""
    ready_int8: bool = False

    def calib_method(self, method: str | None) -> str | None:
        """The int8 activation-range method this back end uses for ``method`` (None: its default);
        a method it cannot use raises one line."""
        if method is None:
            return self.default_calib_method
        if not self.calib_methods:
            raise EdgeCNNError(f"--calib-method is not a choice of the {self.name} back end ({self.calibration}); "
                               f"drop it or use --converter litert")
        if method not in self.calib_methods:
            raise EdgeCNNError(f"--calib-method takes one of {', '.join(self.calib_methods)}; got {method!r}")
        return method


def _litert() -> Any:
    from edgecnn.converters.litert import LiteRTConverter

    return LiteRTConverter()


def _onnx2tf() -> Any:
    from edgecnn.converters.onnx2tf import ONNX2TFConverter

    return ONNX2TFConverter()


BACKENDS = {
    "litert": Backend("litert", "litert-torch, default", _litert, calib_methods=tuple(METHODS),
                      default_calib_method=DEFAULT_METHOD, calibration="PT2E, --calib-method", ready_int8=True),
    "onnx2tf": Backend("onnx2tf", "torch.onnx + onnxsim + onnx2tf", _onnx2tf,
                       calibration="TFLite converter's own min/max ranges"),
}


def backend(name: str) -> Backend:
    """The table row of ``name``; an unknown one raises with the choices."""
    if name not in BACKENDS:
        raise EdgeCNNError(f"--converter takes one of {', '.join(BACKENDS)}; got {name!r}")
    return BACKENDS[name]
