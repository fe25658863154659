"""Labelled image datasets: image folders, Fashion-MNIST (IDX files) and CIFAR-10 (python batches).

:func:`open_dataset` turns what the user passes as ``--data`` into a :class:`LabelledData`: class
names, ``in_chans`` (1 for grayscale data, 3 for RGB) and the splits ``train``, ``val`` and, where
the data has one, ``test``. Each :class:`Split` hands out PIL images by index, so training
augmentation and the evaluation :class:`~edgecnn.data.transforms.Preprocess` treat every source
alike.

- An image folder is ``DATA/train/<class>/*`` + ``DATA/val/<class>/*`` (+ optional ``test/``), or
  ``DATA/<class>/*`` split per class with a seeded shuffle (``val_split`` of each class to ``val``).
  Unreadable images are skipped and counted; above ``max_unreadable`` (a fraction) loading fails.
  Empty classes, and classes more unbalanced than ``max_imbalance`` (largest / smallest), fail with
  the per-class counts.
- Fashion-MNIST is read from its four IDX files (gzip or raw), found in Debian's
  ``dataset-fashion-mnist`` location by default; ``val`` is a seeded ``val_split`` of the 60,000
  training images (``val_split=0`` uses the 10,000-image test set as ``val``).
- An ImageNet photo folder is flat, every image named ``<wnid>_<anything>`` (e.g.
  ``n01440764_tench.JPEG``, the layout of the ImageNet validation sample sets): labelled for the
  1000 ImageNet-1k classes (index = the WordNet ID's sorted position), one ``test`` split.
- CIFAR-10's official python batches are pickles. They are read with an unpickler that can build
  only NumPy arrays, lists, dicts and strings; any other object in the file is refused.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from edgecnn.data.transforms import IMAGE_SUFFIXES, list_images
from edgecnn.errors import EdgeCNNError

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fmnist")
CIFAR10_NAMES = ("cifar-10", "cifar10", "cifar_10")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
SPLIT_DIRS = ("train", "val", "test")


def _cache_root() -> Path:
    return Path(os.environ.get("EDGECNN_CACHE") or Path.home() / ".cache" / "edgecnn").expanduser()


def fashion_mnist_dirs() -> list[Path]:
    """Where ``--data fashion-mnist`` looks: ``$EDGECNN_FASHION_MNIST``, Debian's package, the cache."""
    dirs = [Path(os.environ["EDGECNN_FASHION_MNIST"])] if os.environ.get("EDGECNN_FASHION_MNIST") else []
    return dirs + [Path("/usr/share/datasets/fashion-mnist"), _cache_root() / "datasets" / "fashion-mnist"]


def cifar10_dirs() -> list[Path]:
    """Where ``--data cifar-10`` looks: ``$EDGECNN_CIFAR10``, then the cache."""
    dirs = [Path(os.environ["EDGECNN_CIFAR10"])] if os.environ.get("EDGECNN_CIFAR10") else []
    return dirs + [_cache_root() / "datasets" / "cifar-10-batches-py"]


@dataclass
class Split:
    """One split: integer ``labels`` and either in-memory ``pixels`` (N, H, W, C uint8) or ``paths``."""

    labels: np.ndarray
    pixels: np.ndarray | None = None
    paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """The ``i``-th image as PIL (grayscale ``L`` or ``RGB``)."""
        if self.pixels is not None:
            arr = self.pixels[i]
            return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        from edgecnn.data.transforms import load_image

        return load_image(self.paths[i])

    def subset(self, index: Iterable[int]) -> "Split":
        index = np.asarray(list(index), dtype=np.int64)
        return Split(labels=self.labels[index],
                     pixels=None if self.pixels is None else self.pixels[index],
                     paths=None if self.paths is None else [self.paths[i] for i in index])

    def counts(self, num_classes: int) -> list[int]:
        """Images per class."""
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass
class LabelledData:
    """A labelled dataset: ``splits`` maps ``train``/``val``/``test`` to :class:`Split`.

    ``mean``/``std`` are the training pixels' per-channel statistics on [0, 1] (computed for
    in-memory datasets; ``None`` for image folders, which use the model's). ``native_res`` is the
    images' own size (pixels) when they all share one. ``unreadable`` lists skipped files.
    """

    source: str
    classes: list[str]
    in_chans: int
    splits: dict[str, Split]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    native_res: int | None = None
    unreadable: list[str] = field(default_factory=list)
    val_is_test: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise EdgeCNNError(f"{self.source} has no {name!r} split (it has {', '.join(self.splits)})")
        return self.splits[name]


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or raw) as a uint8 array: (N,) labels or (N, rows, cols) images."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EdgeCNNError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 8 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise EdgeCNNError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise EdgeCNNError(f"{path} is truncated: header says {dims}, found {data.size} bytes of data")
    return data.reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and _idx_file(folder, IDX_FILES["train"][0]) is not None


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes(), compresslevel=1))


def subset_folder(dst: Path, n_train: int, n_test: int) -> Path:
    """The first ``n_train``/``n_test`` Fashion-MNIST images as an IDX folder ``dst`` (short runs, tests)."""
    src = next((d for d in fashion_mnist_dirs() if is_idx_folder(d)), None)
    if src is None:
        raise EdgeCNNError("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(dst / f"{split}-{kind}-ubyte.gz", read_idx(src / f"{split}-{kind}-ubyte.gz")[:n])
    return dst


def load_idx_folder(folder: Path, classes: Iterable[str] | None = None) -> dict[str, Split]:
    """The train and test splits of an MNIST-style folder (images are 1-channel)."""
    splits = {}
    for split, (images, labels) in IDX_FILES.items():
        img_path, lab_path = _idx_file(folder, images), _idx_file(folder, labels)
        if img_path is None or lab_path is None:
            raise EdgeCNNError(f"{folder} lacks {images}[.gz] or {labels}[.gz] (the {split} split)")
        pixels, labs = read_idx(img_path), read_idx(lab_path)
        if pixels.ndim != 3 or labs.ndim != 1 or len(pixels) != len(labs):
            raise EdgeCNNError(f"{img_path} and {lab_path} do not pair up: shapes "
                               f"{list(pixels.shape)} and {list(labs.shape)}")
        splits[split] = Split(labels=labs.astype(np.int64), pixels=pixels[..., None])
    return splits


# ---------------------------------------------------------------- CIFAR-10 (python batches)

class _ArrayUnpickler(pickle.Unpickler):
    """Builds only NumPy arrays (plus the lists, dicts and strings around them); refuses anything else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle API)
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")


def _get(d: dict, key: str):
    return d[key] if key in d else d.get(key.encode())


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR python batch as a dict with str keys, read with :class:`_ArrayUnpickler`."""
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise EdgeCNNError(f"cannot read CIFAR batch {path}: {exc}") from None
    if not isinstance(d, dict):
        raise EdgeCNNError(f"{path} is not a CIFAR batch (a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def is_cifar_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / CIFAR_TRAIN_BATCHES[0]).is_file()


def load_cifar_folder(folder: Path) -> tuple[dict[str, Split], list[str]]:
    """Train (five batches) and test splits of CIFAR-10's ``cifar-10-batches-py`` folder, and class names."""
    def batch_split(names: Iterable[str]) -> Split:
        pixels, labels = [], []
        for name in names:
            d = read_cifar_batch(folder / name)
            data, labs = np.asarray(_get(d, "data")), np.asarray(_get(d, "labels"), dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labs):
                raise EdgeCNNError(f"{folder / name} is not a CIFAR-10 batch (data {list(data.shape)} "
                                   f"{data.dtype}, {len(labs)} labels)")
            pixels.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(labs)
        return Split(labels=np.concatenate(labels), pixels=np.ascontiguousarray(np.concatenate(pixels)))

    missing = [n for n in (*CIFAR_TRAIN_BATCHES, "test_batch") if not (folder / n).is_file()]
    if missing:
        raise EdgeCNNError(f"{folder} lacks the CIFAR-10 batches {', '.join(missing)}")
    classes = [str(i) for i in range(10)]
    if (folder / "batches.meta").is_file():
        names = _get(read_cifar_batch(folder / "batches.meta"), "label_names") or []
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names] or classes
    return {"train": batch_split(CIFAR_TRAIN_BATCHES), "test": batch_split(["test_batch"])}, classes


# ---------------------------------------------------------------- image folders

def _readable(path: Path) -> str | None:
    """None when Pillow can decode ``path`` to the end, else the reason it cannot.

    ``verify()`` would not decode JPEG data (a truncated file passes); JPEGs are decoded at 1/8 scale
    (``draft``), which still reads every byte, in a fraction of the time of a full decode.
    """
    try:
        with Image.open(path) as im:
            im.draft(im.mode, (1, 1))
            im.load()
        return None
    except Exception as exc:  # Pillow raises many types for corrupt files
        return f"{exc.__class__.__name__}: {exc}"


def class_dirs(folder: Path) -> list[Path]:
    """The class sub-folders of an image folder, sorted (hidden folders ignored)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _keep_readable(files: list[Path], bad: list[str]) -> list[Path]:
    """The readable ``files``; the others are appended to ``bad`` with their reason."""
    kept = []
    for path in files:
        reason = _readable(path)
        if reason is None:
            kept.append(path)
        else:
            bad.append(f"{path} ({reason})")
    return kept


def _check_unreadable(bad: list[str], total: int, max_unreadable: float) -> None:
    """Raise when more than ``max_unreadable`` (a fraction) of ``total`` images are unreadable."""
    if bad and len(bad) / total > max_unreadable:
        raise EdgeCNNError(f"{len(bad)} of {total} images are unreadable ({100 * len(bad) / total:.1f}% > "
                           f"{100 * max_unreadable:g}%), e.g. {bad[0]}; fix or remove them, or raise "
                           f"--max-unreadable")


def _folder_split(folder: Path, classes: list[str], bad: list[str]) -> tuple[Split, int]:
    """Images of ``folder/<class>/`` for each class, readable ones only; unreadable appended to ``bad``."""
    paths, labels, total = [], [], 0
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = list_images(class_dir) if class_dir.is_dir() else []
        total += len(files)
        kept = _keep_readable(files, bad)
        paths += kept
        labels += [label] * len(kept)
    return Split(labels=np.asarray(labels, dtype=np.int64), paths=paths), total


def _describe_counts(classes: list[str], counts: list[int]) -> str:
    pairs = sorted(zip(counts, classes))
    shown = pairs if len(pairs) <= 6 else pairs[:3] + pairs[-3:]
    return ", ".join(f"{name!r} {n}" for n, name in shown) + (" ..." if len(pairs) > 6 else "")


def check_balance(split: Split, classes: list[str], where: str, max_imbalance: float) -> None:
    """Raise when a class of ``split`` is empty, or the largest/smallest class ratio exceeds ``max_imbalance``."""
    counts = split.counts(len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise EdgeCNNError(f"class {empty[0]!r} has 0 images in {where}"
                           + (f" (also empty: {', '.join(map(repr, empty[1:]))})" if len(empty) > 1 else "")
                           + f"; images per class: {_describe_counts(classes, counts)}")
    ratio = max(counts) / min(counts)
    if ratio > max_imbalance:
        big, small = int(np.argmax(counts)), int(np.argmin(counts))
        raise EdgeCNNError(
            f"unbalanced classes in {where}: {classes[big]!r} has {counts[big]} images but "
            f"{classes[small]!r} has {counts[small]} (ratio {ratio:.1f} > {max_imbalance:g}); add images "
            f"or pass --max-imbalance {int(np.ceil(ratio))} to train anyway")


def seeded_split(split: Split, num_classes: int, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split each class with a seeded shuffle: ``fraction`` of it (at least one image) to the second part."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(split.labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = max(1, int(round(len(idx) * fraction)))
        if len(idx) - n_val < 1:
            raise EdgeCNNError(f"class {c} has {len(idx)} image(s): too few to hold out a validation "
                               f"split; add images, or give a val/ folder")
        held.extend(idx[:n_val].tolist())
        keep.extend(idx[n_val:].tolist())
    return split.subset(sorted(keep)), split.subset(sorted(held))


def is_synset_folder(folder: Path) -> bool:
    """True for a flat folder whose images are all named ``<ImageNet wnid>_...``."""
    from edgecnn.labels import synset_index

    files = list_images(folder)
    return bool(files) and not class_dirs(folder) and all(synset_index(p.name) is not None for p in files)


def load_synset_folder(folder: Path, max_unreadable: float) -> LabelledData:
    """A flat ImageNet photo folder (see the module docstring): 1000 classes, one ``test`` split."""
    from edgecnn.labels import imagenet_labels, synset_index

    files, bad = list_images(folder), []
    paths = _keep_readable(files, bad)
    _check_unreadable(bad, len(files), max_unreadable)
    split = Split(labels=np.asarray([synset_index(p.name) for p in paths], dtype=np.int64), paths=paths)
    return LabelledData(source=str(folder), classes=imagenet_labels(), in_chans=3,
                        splits={"test": split, "val": split}, unreadable=bad, val_is_test=True)


def load_image_folder(folder: Path, val_split: float, seed: int, max_unreadable: float,
                      max_imbalance: float) -> LabelledData:
    """An image folder with class sub-folders (see the module docstring)."""
    has_splits = (folder / "train").is_dir()
    root = folder / "train" if has_splits else folder
    classes = [p.name for p in class_dirs(root)]
    if not classes:
        raise EdgeCNNError(f"{root} has no class sub-folders; expected {root}/<class name>/<images>")
    if len(classes) < 2:
        raise EdgeCNNError(f"{root} has only one class ({classes[0]!r}); a classifier needs at least 2")
    bad: list[str] = []
    splits, total = {}, 0
    for name in (SPLIT_DIRS if has_splits else ("train",)):
        sub = folder / name if has_splits else folder
        if not sub.is_dir():
            continue
        extra = sorted(set(p.name for p in class_dirs(sub)) - set(classes))
        if extra:
            raise EdgeCNNError(f"{sub} has class folders that train/ lacks: {', '.join(extra)}")
        splits[name], n = _folder_split(sub, classes, bad)
        total += n
    if total == 0:
        raise EdgeCNNError(f"{folder} holds no images in its class folders (looked for "
                           f"{', '.join(IMAGE_SUFFIXES)})")
    _check_unreadable(bad, total, max_unreadable)
    check_balance(splits["train"], classes, str(root), max_imbalance)
    if "val" not in splits:
        if not 0 < val_split < 1:
            raise EdgeCNNError(f"{folder} has no val/ folder: give --val-split between 0 and 1 "
                               f"(got {val_split:g}) to hold out part of each class")
        splits["train"], splits["val"] = seeded_split(splits["train"], len(classes), val_split, seed)
    else:
        counts = splits["val"].counts(len(classes))
        empty = [c for c, n in zip(classes, counts) if n == 0]
        if empty:
            raise EdgeCNNError(f"class {empty[0]!r} has 0 images in {folder / 'val'}")
    in_chans, native = _folder_format(splits["train"].paths[:64])
    return LabelledData(source=str(folder), classes=classes, in_chans=in_chans, splits=splits,
                        native_res=native, unreadable=bad)


def _folder_format(paths: list[Path]) -> tuple[int, int | None]:
    """From a sample of images: ``in_chans`` (1 when all are grayscale, else 3) and the common square
    size in pixels when they all share one (``None`` for photos of mixed sizes)."""
    modes, sizes = set(), set()
    for path in paths:
        with Image.open(path) as im:
            modes.add(im.mode)
            sizes.add(im.size)
    gray = modes <= {"L", "1", "I", "I;16", "F", "LA"}
    w, h = next(iter(sizes)) if len(sizes) == 1 else (0, 1)
    return (1 if gray else 3), (w if w == h else None)


# ---------------------------------------------------------------- one entry point

def channel_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NHWC ``pixels`` scaled to [0, 1] (rounded to 4 digits)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(pixels.shape[-1]):
        hist = np.bincount(pixels[..., c].ravel(), minlength=256).astype(np.float64)
        m = float(hist @ levels / hist.sum())
        mean.append(round(m, 4))
        std.append(round(float(np.sqrt(hist @ (levels - m) ** 2 / hist.sum())), 4))
    return tuple(mean), tuple(std)


def _array_dataset(source: str, classes: list[str], splits: dict[str, Split], val_split: float,
                   seed: int) -> LabelledData:
    train = splits["train"]
    if len(classes) != int(train.labels.max()) + 1:
        classes = [str(i) for i in range(int(train.labels.max()) + 1)]
    mean, std = channel_stats(train.pixels)
    if val_split > 0:
        if val_split >= 1:
            raise EdgeCNNError(f"--val-split must be below 1, got {val_split:g}")
        train, val = seeded_split(train, len(classes), val_split, seed)
        out = {"train": train, "val": val, "test": splits["test"]}
    else:
        out = {"train": train, "val": splits["test"], "test": splits["test"]}
    return LabelledData(source=source, classes=classes, in_chans=train.pixels.shape[3], splits=out,
                        mean=mean, std=std, native_res=train.pixels.shape[1], val_is_test=val_split <= 0)


def _named_folder(name: str, candidates: list[Path], check, hint: str) -> Path:
    for folder in candidates:
        if check(folder):
            return folder
    raise EdgeCNNError(f"{name} not found in {', '.join(map(str, candidates))}; {hint}")


def open_dataset(data: str | Path, *, val_split: float = 0.1, seed: int = 0,
                 max_unreadable: float = 0.05, max_imbalance: float = 10.0) -> LabelledData:
    """Open ``data``: ``fashion-mnist``, ``cifar-10``, or a folder (IDX files, CIFAR batches, class
    sub-folders of images, or ImageNet photos named by WordNet ID)."""
    key = str(data).strip().lower()
    if key in FASHION_MNIST_NAMES:
        folder = _named_folder("Fashion-MNIST", fashion_mnist_dirs(), is_idx_folder,
                               "install it with 'apt-get install dataset-fashion-mnist' or pass "
                               "--data DIR holding its four IDX files")
        return _array_dataset("fashion-mnist", list(FASHION_MNIST_CLASSES), load_idx_folder(folder),
                              val_split, seed)
    if key in CIFAR10_NAMES:
        folder = _named_folder("CIFAR-10", cifar10_dirs(), is_cifar_folder,
                               "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/"
                               "cifar.html, extract it and pass --data .../cifar-10-batches-py")
        splits, classes = load_cifar_folder(folder)
        return _array_dataset(str(folder), classes, splits, val_split, seed)
    folder = Path(data).expanduser().absolute()  # checkpoints record where the data is
    if not folder.exists():
        raise EdgeCNNError(f"data {data!r} is neither a folder nor a known dataset name "
                           f"(fashion-mnist, cifar-10)")
    if not folder.is_dir():
        raise EdgeCNNError(f"--data {folder} is a file; pass a folder with class sub-folders")
    if is_idx_folder(folder):
        labels = FASHION_MNIST_CLASSES if "fashion" in str(folder).lower() else [str(i) for i in range(10)]
        return _array_dataset(str(folder), list(labels), load_idx_folder(folder), val_split, seed)
    if is_cifar_folder(folder):
        splits, classes = load_cifar_folder(folder)
        return _array_dataset(str(folder), classes, splits, val_split, seed)
    if is_synset_folder(folder):
        return load_synset_folder(folder, max_unreadable)
    return load_image_folder(folder, val_split, seed, max_unreadable, max_imbalance)


def sample_images(data: str | Path, n: int, split: str = "train", seed: int = 0) -> list[Image.Image]:
    """``n`` seeded random images of a dataset's split, as PIL: for int8 calibration and verification.

    ``data`` is anything :func:`open_dataset` takes, e.g. a checkpoint's ``meta.data``
    (``"fashion-mnist"``, an IDX or CIFAR folder, an image folder).
    """
    part = open_dataset(data, seed=seed, max_imbalance=float("inf")).split(split)
    pick = np.random.default_rng(seed).choice(len(part), size=min(n, len(part)), replace=False)
    return [part.image(int(i)) for i in sorted(pick)]
