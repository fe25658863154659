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
from edgecnn.errors import EdgeCNNError
from edgecnn.io import atomic_path

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
    def from_json(cls, text: str) -> "CheckpointMeta":
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {d.get('format')!r}")
        return cls(model=d["model"], knobs=d["knobs"], num_classes=int(d["num_classes"]),
                   in_chans=int(d["in_chans"]), preprocess=Preprocess.from_dict(d["preprocess"]),
                   labels=list(d.get("labels") or []), data=d.get("data"), extra=d.get("extra") or {})


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights and ``meta`` atomically to ``path`` (a ``.ckpt`` safetensors file)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"edgecnn": meta.to_json()})
    return Path(path)


def read_meta(path: str | Path) -> CheckpointMeta | None:
    """The edgecnn metadata of a safetensors file, or ``None`` when it has none (a plain file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("edgecnn")
    except Exception as exc:  # safetensors raises its own error types for foreign/corrupt files
        raise EdgeCNNError(f"{path} is not a readable safetensors file: {exc}") from None
    if text is None:
        return None
    try:
        return CheckpointMeta.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgeCNNError(f"{path} has broken edgecnn metadata: {exc}") from None


def is_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file carrying edgecnn metadata."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or int.from_bytes(head, "little") > path.stat().st_size:
        return False
    try:
        return read_meta(path) is not None
    except EdgeCNNError:
        return False


def load_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model recorded in an edgecnn checkpoint and load its weights."""
    from safetensors.torch import load_file

    from edgecnn.models import create_model
    from edgecnn.weights import load_state_dict_strict

    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"checkpoint {path} does not exist")
    meta = read_meta(path)
    if meta is None:
        raise EdgeCNNError(f"{path} is a safetensors file without edgecnn metadata; pass it as "
                           f"--weights to a model you name instead")
    model = create_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, **meta.knobs)
    load_state_dict_strict(model, load_file(str(path)), source=str(path))
    return model, meta
