"""Class labels: the 1000 ImageNet class names shipped with edgecnn, and plain label files.

A label file is UTF-8 text with one class name per line, in class-index order (line 1 is class 0):
the format of ``edgecnn/imagenet_classes.txt``, of TFLite metadata label files and of MediaPipe.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Iterable

from edgecnn.errors import EdgeCNNError
from edgecnn.io import write_text

IMAGENET_CLASSES_FILE = "imagenet_classes.txt"
IMAGENET_SYNSETS_FILE = "imagenet_synsets.txt"
SYNSET_NAME = re.compile(r"^(n\d{8})[_.]")


@functools.lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    text = resources.files("edgecnn").joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")
    return tuple(_parse(text, IMAGENET_CLASSES_FILE))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (``imagenet_labels()[285] == "Egyptian cat"``)."""
    return list(_imagenet_labels())


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> dict[str, int]:
    """WordNet ID -> ImageNet-1k class index (``imagenet_synsets()["n01440764"] == 0``, tench).

    The index is the ID's position in sorted order, the convention of torchvision and TF-slim.
    """
    text = resources.files("edgecnn").joinpath(IMAGENET_SYNSETS_FILE).read_text(encoding="utf-8")
    ids = [line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]
    return {wnid: i for i, wnid in enumerate(ids)}


def synset_index(file_name: str) -> int | None:
    """The ImageNet-1k class of a file named ``<wnid>_<anything>`` (e.g. ``n01440764_tench.JPEG``),
    or None when the name does not start with a known WordNet ID."""
    match = SYNSET_NAME.match(file_name)
    return imagenet_synsets().get(match.group(1)) if match else None


def _parse(text: str, source: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    labels = [line.strip() for line in lines]
    if not labels:
        raise EdgeCNNError(f"label file {source} is empty; expected one class name per line")
    blank = [i for i, label in enumerate(labels) if not label]
    if blank:
        raise EdgeCNNError(f"label file {source} has an empty class name on line {blank[0] + 1}")
    return labels


def read_labels(path: str | Path) -> list[str]:
    """Class names from a label file: one per line, in index order; blank trailing lines are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeCNNError(f"label file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeCNNError(f"cannot read label file {path}: {exc}") from None
    return _parse(text, str(path))


def write_labels(path: str | Path, labels: Iterable[str]) -> Path:
    """Write ``labels`` one per line (UTF-8) to ``path`` atomically; returns ``path``."""
    labels = [str(label) for label in labels]
    bad = [label for label in labels if not label.strip() or "\n" in label or "\r" in label]
    if not labels or bad:
        what = "no labels" if not labels else f"a label that is empty or spans lines: {bad[0]!r}"
        raise EdgeCNNError(f"cannot write label file {path}: {what}")
    return write_text(path, "\n".join(labels) + "\n")
