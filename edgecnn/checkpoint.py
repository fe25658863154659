"""edgecnn checkpoints: one safetensors file that knows which model it is and how to feed it.

The tensors are the model's ``state_dict``; the safetensors header metadata holds one JSON entry,
``"edgecnn"``, with the model name, its knobs, ``num_classes``, ``in_chans``, the preprocessing
(:class:`~edgecnn.data.transforms.Preprocess`: resolution, mean, std), the class labels and where
the training data came from. Nothing is unpickled when a checkpoint is read. Training state for
``--resume`` (optimizer, scheduler, RNG) lives beside it in ``<name>.state.pt``, written by the
trainer and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.io import atomic_path
from edgecnn.limits import IN_CHANS, NUM_CLASSES
from edgecnn.schema import Doc, check_knobs

FORMAT = "edgecnn-checkpoint/1"


@dataclass
class CheckpointMeta:
    """Everything needed to rebuild, feed and label a trained model."""

    model: str
    knobs: dict[str, Any]
    num_classes: int
    in_chans: int
    preprocess: Preprocess
    labels: list[str] = field(default_factory=list)
    data: str | None = None  # the training data (path or dataset name), for calibration defaults
    extra: dict[str, Any] = field(default_factory=dict)  # epoch, metrics, ...

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "model": self.model, "knobs": self.knobs,
                           "num_classes": self.num_classes, "in_chans": self.in_chans,
                           "preprocess": self.preprocess.to_dict(), "labels": self.labels,
                           "data": self.data, "extra": self.extra})

    @classmethod
    def from_json(cls, text: str, where: str = "checkpoint metadata") -> "CheckpointMeta":
        """Parse metadata read from a file (untrusted): every field is checked, the model must exist."""
        from edgecnn.models import get_spec

        try:
            doc = Doc(json.loads(text), where)
        except ValueError as exc:
            raise EdgeCNNError(f"{where} is not JSON: {exc}") from None
        if doc.get("format", str) != FORMAT:
            raise EdgeCNNError(f"{where}: unknown format {shorten(repr(doc.data['format']))} (expected {FORMAT})")
        name = doc.get("model", str)
        try:
            spec = get_spec(name)
        except EdgeCNNError as exc:
            raise EdgeCNNError(f"{where}: {exc}") from None
        num_classes, in_chans = doc.get("num_classes", bound=NUM_CLASSES), doc.get("in_chans", bound=IN_CHANS)
        preprocess = Preprocess.from_dict(doc.data.get("preprocess"), f"{where}: preprocess")
        labels = doc.items("labels", str, [], max_len=NUM_CLASSES.hi)
        if preprocess.in_chans != in_chans or labels and len(labels) != num_classes:
            raise EdgeCNNError(f"{where}: in_chans {in_chans}, num_classes {num_classes}, {len(labels)} labels "
                               f"and preprocess in_chans {preprocess.in_chans} do not agree")
        try:
            spec.check_res(preprocess.res)
        except EdgeCNNError as exc:
            raise EdgeCNNError(f"{where}: {exc}") from None
        return cls(model=name, knobs=check_knobs(doc, "knobs", spec.tunable), num_classes=num_classes,
                   in_chans=in_chans, preprocess=preprocess, labels=labels, data=doc.get("data", str, None),
                   extra=doc.get("extra", dict, {}))


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights and ``meta`` atomically to ``path`` (a ``.ckpt`` safetensors file)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"edgecnn": meta.to_json()})
    return Path(path)


def _meta_text(path: str | Path) -> str | None:
    """The raw ``"edgecnn"`` metadata entry of a safetensors file (None: a plain safetensors file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("edgecnn")
    except Exception as exc:  # safetensors raises its own error types for foreign/corrupt files
        raise EdgeCNNError(f"{path} is not a readable safetensors file: {exc}") from None


def read_meta(path: str | Path) -> CheckpointMeta | None:
    """The checked edgecnn metadata of a safetensors file, or ``None`` when it has none (a plain file)."""
    text = _meta_text(path)
    return None if text is None else CheckpointMeta.from_json(text, f"{path} (edgecnn metadata)")


def is_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file carrying edgecnn metadata (valid or not: loading checks it)."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or int.from_bytes(head, "little") > path.stat().st_size:
            return False
        return _meta_text(path) is not None
    except (OSError, EdgeCNNError):  # unreadable, or a name no file system takes
        return False
