"""The model registry: every zoo model by name, with its scaling knobs and input constraints.

Family files call :func:`register` once per named variant; :func:`create_model` resolves a name
or alias, validates the user's knobs and builds the ``nn.Module``. Each built model carries its
:class:`ModelConfig` as ``model.edgecnn_config`` so later stages (stats, export, checkpoints) know
what it is without being told twice.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.limits import IN_CHANS, NUM_CLASSES, RES

MAX_NAME_CHARS = 100  # longer than any model name or alias
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """A named model variant.

    ``knobs`` are the fixed builder arguments of this variant (e.g. EfficientNet-B3's width and
    depth); ``tunable`` names the arguments a user may set (e.g. ``alpha``), each with its default.
    ``min_res`` is the smallest square input (pixels) the architecture accepts; ``fixed_res`` marks
    models whose classifier only fits ``default_res``.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    default_res: int = 224
    min_res: int = 32
    fixed_res: bool = False
    default_in_chans: int = 3
    default_num_classes: int = 1000
    knobs: dict[str, Any] = field(default_factory=dict)
    tunable: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    paper: str = ""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # Resize shorter side to ``default_res / crop_pct`` then centre-crop (torchvision's eval recipe).
    crop_pct: float = 0.875
    # Resolution rule for tunable knobs, e.g. EfficientNet's phi -> resolution; ``None`` keeps default_res.
    res_for: Callable[[dict[str, Any]], int] | None = None

    def check_res(self, res: int) -> int:
        """Return ``res`` if the architecture accepts a ``res`` x ``res`` input, else raise."""
        RES.check(res)
        if self.fixed_res and res != self.default_res:
            raise EdgeCNNError(
                f"{self.name} takes only {self.default_res}x{self.default_res} inputs "
                f"(its fully connected classifier is sized for them), got {res}")
        if res < self.min_res:
            raise EdgeCNNError(
                f"{self.name} needs an input of at least {self.min_res}x{self.min_res} pixels, got {res}")
        return res


@dataclass(frozen=True)
class ModelConfig:
    """What was built: the registry name plus every argument that shaped the module."""

    name: str
    family: str
    num_classes: int
    in_chans: int
    default_res: int
    knobs: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.name)


# Knobs written without their name, as the published file names do (Keras, TF-Slim: mobilenet_v1_0.50_160).
BARE_IN_NAME = ("alpha",)


def is_numeric_knob(value: Any) -> bool:
    """A scaling knob (a number, always part of the name) rather than a switch (bool, named when set)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def canonical_name(config: ModelConfig, res: int) -> str:
    """``mobilenet_v1_0.50_160``: model name, knob values (floats as ``%.2f``), resolution.

    The multipliers (float knobs: alpha, phi) always appear; other knobs (e.g. ``aux_logits``, a
    ViT's ``patch_size``) only when they differ from the model's default.
    """
    parts = [config.name]
    defaults = config.spec.tunable
    for key, value in config.knobs.items():
        if not isinstance(defaults.get(key), float) and value == defaults.get(key):
            continue
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        parts.append(text if key in BARE_IN_NAME else f"{key}{text}")
    return "_".join(parts + [str(res)])


def tunable_knobs() -> dict[str, dict[str, Any]]:
    """Every knob some registered model lets the user set: name -> ``{"default": the first model's
    default, "models": the models that take it}``, in registration order."""
    knobs: dict[str, dict[str, Any]] = {}
    for spec in _REGISTRY.values():
        for key, default in spec.tunable.items():
            knobs.setdefault(key, {"default": default, "models": []})["models"].append(spec.name)
    return knobs


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` (and its aliases) to the registry; names are lower-case and unique."""
    for key in (spec.name, *spec.aliases):
        if key != key.lower():
            raise ValueError(f"model names are lower-case: {key!r}")
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} registered twice")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def list_models(family: str | None = None) -> list[str]:
    """Canonical names of every registered model, optionally of one family, in registration order."""
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def list_aliases() -> dict[str, str]:
    """Alias -> canonical name."""
    return dict(_ALIASES)


def get_spec(name: str) -> ModelSpec:
    """Resolve a name or alias; an unknown name raises with the closest known names."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if len(key) > MAX_NAME_CHARS:  # no registered name is near it; difflib would take seconds
        raise EdgeCNNError(f"unknown model {shorten(name)!r}; run 'edgecnn models' to list them")
    candidates = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(key, candidates, n=4, cutoff=0.5)
    close += [c for c in candidates if c.startswith(key[:4]) and c not in close][: 4 - len(close)]
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'edgecnn models' to list them"
    raise EdgeCNNError(f"unknown model {shorten(name)!r}{hint}")


def resolve_knobs(spec: ModelSpec, **user_knobs: Any) -> dict[str, Any]:
    """Merge the user's knobs over the variant's tunable defaults; unknown knobs raise."""
    unknown = {k for k, v in user_knobs.items() if v is not None} - set(spec.tunable)
    if unknown:
        allowed = ", ".join(sorted(spec.tunable)) or "none"
        raise EdgeCNNError(
            f"{spec.name} has no knob {', '.join(sorted(unknown))} (its knobs: {allowed})")
    knobs = dict(spec.tunable)
    knobs.update({k: v for k, v in user_knobs.items() if v is not None})
    return knobs


def default_res(name: str, **user_knobs: Any) -> int:
    """The natural input resolution of a model with these knobs (pixels)."""
    spec = get_spec(name)
    knobs = resolve_knobs(spec, **user_knobs)
    return spec.res_for(knobs) if spec.res_for else spec.default_res


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 **knobs: Any) -> nn.Module:
    """Build a zoo model by name, randomly initialised (weights: :func:`edgecnn.create_model`).

    ``num_classes`` and ``in_chans`` default to the variant's own (1000 and 3 for ImageNet models,
    10 and 1 for LeNet-5). ``knobs`` are the family's scaling arguments (``alpha`` for MobileNets,
    ``phi`` for EfficientNet, ``aux_logits`` for GoogLeNet, ...: ``ModelSpec.tunable``).
    """
    spec = get_spec(name)
    num_classes = NUM_CLASSES.check(spec.default_num_classes if num_classes is None else num_classes)
    in_chans = IN_CHANS.check(spec.default_in_chans if in_chans is None else in_chans)
    resolved = resolve_knobs(spec, **knobs)
    model = spec.builder(num_classes=num_classes, in_chans=in_chans, **spec.knobs, **resolved)
    res = spec.res_for(resolved) if spec.res_for else spec.default_res
    model.edgecnn_config = ModelConfig(
        name=spec.name, family=spec.family, num_classes=num_classes, in_chans=in_chans,
        default_res=res, knobs=resolved, mean=spec.mean if in_chans == 3 else channel_stats(spec.mean, in_chans),
        std=spec.std if in_chans == 3 else channel_stats(spec.std, in_chans), crop_pct=spec.crop_pct)
    return model


def channel_stats(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Per-channel normalisation for a non-RGB input: the mean of the RGB values, repeated."""
    mean = sum(values) / len(values)
    return tuple(round(mean, 4) for _ in range(in_chans))
