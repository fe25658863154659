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


def add_wide_arg(parser: argparse.ArgumentParser) -> None:
    """``--wide``: every column of the command's tables, however wide (see :func:`print_table`)."""
    parser.add_argument("--wide", action="store_true",
                        help="show every column of the tables even when wider than the terminal "
                             "(by default less important columns are left out to fit)")


def output_width() -> int | None:
    """Characters a table may take on stdout: ``$COLUMNS`` when set, else the terminal's width;
    None (no limit) when stdout is not a terminal, so piped output is never cut."""
    import os
    import shutil

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _table(columns: Sequence[str], rows: list[list[str]], justify: Sequence[str] | None, keep: list[int]) -> Any:
    """A rich table of the ``keep`` columns. Column 0 (the name) never wraps; the others wrap at
    spaces only (no column is narrower than its longest word) and fold rather than cut."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=any(columns))  # key-value tables have no header
    for i in keep:
        texts = [columns[i]] + [r[i] for r in rows]
        longest = max(len(t) for t in texts) if i == 0 else max(len(w) for t in texts for w in t.split() or [""])
        table.add_column(columns[i], justify=(justify[i] if justify else "left"), overflow="fold",
                         no_wrap=i == 0, min_width=longest)
    for row in rows:
        table.add_row(*(Text(row[i]) for i in keep))  # as written: no rich markup in names
    return table


UNLIMITED = 100_000  # console width (characters) that never cuts a line


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                justify: Sequence[str] | None = None, *, optional: Sequence[str] = (),
                wide: bool = False) -> None:
    """A table for people, on stdout, that fits the output width (:func:`output_width`).

    ``optional``: columns that may be left out, the first named first, while the table is wider
    than the output; a line under the table names those left out. ``wide``: keep every column
    and ignore the width. The first column (a model or file name) is never cut or wrapped; other
    cells wrap at spaces. Nothing is ever cut: a table that cannot fit even so is printed wider.
    """
    from rich.console import Console
    from rich.measure import Measurement
    from rich.text import Text

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    width = None if wide else output_width()
    console = Console(width=width or UNLIMITED, soft_wrap=False)
    keep = list(range(len(columns)))
    dropped = []

    def measure(table: Any) -> Measurement:
        return Measurement.get(console, console.options.update_width(UNLIMITED), table)

    table = _table(columns, cells, justify, keep)
    for name in optional if width is not None else ():
        if measure(table).maximum <= width:
            break
        keep.remove(list(columns).index(name))
        dropped.append(name)
        table = _table(columns, cells, justify, keep)
    if title:
        console.print(Text(title))
    too_wide = width is not None and measure(table).minimum > width
    (Console(width=UNLIMITED) if too_wide else console).print(table)
    if dropped:
        console.print(Text(f"left out to fit {width} columns: {', '.join(dropped)} (--wide shows them)"))


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
