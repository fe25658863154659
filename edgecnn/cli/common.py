"""Flags and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
from typing import Any, Callable, Iterable, NoReturn, Sequence

from edgecnn.errors import EXIT_USAGE
from edgecnn.limits import ALPHA, IN_CHANS, NUM_CLASSES, PHI, PUBLISHED_ALPHAS, RES, Bound


class Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line ``edgecnn: error: ...``, exit status 2.

    Sub-command parsers inherit the class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        hint = f" (see 'edgecnn {command} --help')" if command else ""
        self.exit(EXIT_USAGE, f"edgecnn: error: {' '.join(message.split())}{hint}\n")


def bounded(bound: Bound, hint: str = "") -> Callable[[str], int | float]:
    """An argparse type: the number in ``text`` if ``bound`` allows it, else an error naming the range."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if bound.integer else float(text)
        except ValueError:
            value = None
        if not bound.allows(value):
            raise argparse.ArgumentTypeError(bound.message(text, hint, typed=True))
        return value

    parse.bound = bound  # lets tests find every bounded flag
    return parse


ALPHA_HINT = "published values are " + "; ".join(
    f"{family} {', '.join(map(str, values))}" for family, values in PUBLISHED_ALPHAS.items())


def add_model_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """MODEL plus the scaling knobs, in the papers' vocabulary."""
    parser.add_argument("model", metavar="MODEL",
                        help="zoo name or alias, e.g. mobilenet, mobilenet_v2, efficientnet_b0 "
                             "(see 'edgecnn models')")
    parser.add_argument("--alpha", type=bounded(ALPHA, ALPHA_HINT), metavar="A",
                        help="width multiplier of MobileNets, in (0, 4] (paper values 0.25/0.5/0.75/1.0 for V1, "
                             "0.35-1.4 for V2, 0.75/1.0 for V3); e.g. --alpha 0.5")
    parser.add_argument("--phi", type=bounded(PHI), metavar="PHI",
                        help="EfficientNet compound coefficient for your own scaled variant "
                             "(width 1.1^phi, depth 1.2^phi, resolution 1.15^phi); e.g. --phi 0.5")
    parser.add_argument("--res", type=bounded(RES), metavar="PX",
                        help="square input resolution in pixels, 8-2048 and at least the model's minimum "
                             "(default: the model's own, e.g. 224); "
                             "e.g. --res 160")
    parser.add_argument("--num-classes", type=bounded(NUM_CLASSES), default=None, metavar="N",
                        help="classifier outputs (default 1000, or the checkpoint's)")
    parser.add_argument("--in-chans", type=bounded(IN_CHANS), default=None, metavar="C",
                        help="input channels: 3 for RGB, 1 for grayscale (default: the model's)")
    if weights:
        parser.add_argument("--weights", metavar="W",
                            help="'imagenet' (torchvision's released file, SHA-256 checked), or a "
                                 "local .pth/.pt/.safetensors file or edgecnn checkpoint "
                                 "(default: random initialisation)")


def model_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The scaling knobs the user actually gave (unset ones are left to the model's defaults)."""
    return {k: getattr(args, k) for k in ("alpha", "phi") if getattr(args, k, None) is not None}


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    json.dump(finite(obj), sys.stdout, indent=2, default=str, allow_nan=False)
    sys.stdout.write("\n")


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral) and not math.isfinite(obj):
        return None
    return obj


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                justify: Sequence[str] | None = None) -> None:
    """A table for people, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify=(justify[i] if justify else "left"))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


def human_count(n: float) -> str:
    """12345678 -> '12.35M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
