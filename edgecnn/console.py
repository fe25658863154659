"""Console output shared by the pipelines and the CLI: tables that fit the terminal, strict JSON
on stdout, human units, progress bars on stderr. No argparse here (that is :mod:`edgecnn.cli`)."""

from __future__ import annotations

import json
import math
import numbers
import sys
from typing import Any, Iterable, Sequence


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


def progress_range(items: range, label: str, enabled: bool):
    """Iterate ``items`` under a rich progress bar (on stderr) when ``enabled``."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
