"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021) and DeiT-Tiny
(Touvron et al., "Training data-efficient image transformers", 2021).

The image is cut into ``patch_size`` x ``patch_size`` patches (one strided convolution), a class
token is prepended, a learned position embedding added, and ``num_layers`` pre-norm transformer
layers (``num_heads`` heads of width ``hidden_dim / num_heads``, MLP ``mlp_dim`` with exact GELU)
run over the tokens; the class token's output feeds the classifier. ``gelu_tanh=True`` swaps the
exact (erf) GELU for its tanh approximation: the onnx2tf back end turns erf into a Flex op that the
LiteRT runtime lacks (measured); litert-torch lowers the exact one to a builtin GELU.

Module layout, state_dict keys and shapes are torchvision's ``vit_b_16``/``vit_b_32``/``vit_l_16``
(86,567,656 / 88,224,232 / 304,326,632 parameters), but attention is
:class:`~edgecnn.models.layers.SelfAttention` (plain matmuls and a softmax) instead of
``nn.MultiheadAttention``, for the LiteRT converters. DeiT-Tiny is ViT-Ti/16 in the same layout
(width 192, 12 layers, 3 heads, MLP 768: 5,717,416 parameters, as the DeiT release).

MACs (:func:`edgecnn.stats.model_stats`) include the attention matmuls: per layer
``2 * tokens**2 * hidden_dim`` on top of the linear layers (ViT-B/16 at 224 px: 0.72 G of 17.58 G).

Resolution: the position embedding is learned for ``image_size`` (default 224 px, which is also the
model's default input). Another input size, or a ``state_dict`` trained at another size, has its
patch-grid embedding resampled bicubically (the class token's entry is kept as is), see
:func:`resize_pos_embedding` and :func:`interpolate_embeddings`. The head is initialised with
std 0.02 rather than torchvision's zeros, so a randomly initialised model does not output constants.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.limits import HIDDEN_DIM, MLP_DIM, NUM_HEADS, NUM_LAYERS, PATCH_SIZE, RES
from edgecnn.models.layers import TransformerBlock, check_rate
from edgecnn.models.registry import ModelSpec, register

# name: (patch_size, num_layers, num_heads, hidden_dim, mlp_dim), ViT paper Table 1 / DeiT Table 1
CONFIGS = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "deit_tiny": (16, 12, 3, 192, 768),
}


CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic convolution coefficient


def bicubic_matrix(old: int, new: int) -> list[list[float]]:
    """The (new, old) matrix of PyTorch's 1-D bicubic resampling with ``align_corners=True``.

    Plain Python numbers: under ``torch.export`` the matrix is a constant, so a resampled position
    embedding folds into one constant instead of a chain of gathers in the converted graph.
    """
    def cubic(x: float) -> float:  # the convolution kernel at distance |x| (Keys 1981)
        x = abs(x)
        if x <= 1:
            return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A if x < 2 else 0.0

    rows = []
    for i in range(new):
        src = i * (old - 1) / (new - 1) if new > 1 else 0.0
        base, t = math.floor(src), src - math.floor(src)
        row = [0.0] * old
        for tap in range(-1, 3):
            row[min(max(base + tap, 0), old - 1)] += cubic(tap - t)
        rows.append(row)
    return rows


def resize_pos_embedding(pos_embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """A (1, 1 + g*g, dim) position embedding resampled to a ``grid`` x ``grid`` patch grid.

    The class token's entry (first) is kept; the g x g grid is resized bicubically with
    ``align_corners=True`` (torchvision's ``interpolate_embeddings`` rule), written as two 2-D matrix
    products with a constant matrix, which litert-torch folds into one constant: a model exported at
    another resolution has no resampling ops. Returned unchanged when it already fits.
    """
    n, seq, dim = pos_embedding.shape if pos_embedding.dim() == 3 else (0, 1, 0)
    old = math.isqrt(seq - 1)
    if n != 1 or old < 1 or old * old != seq - 1:
        raise EdgeCNNError(f"a position embedding must be (1, 1 + g*g, dim), got {list(pos_embedding.shape)}")
    if old == grid:
        return pos_embedding
    a = torch.tensor(bicubic_matrix(old, grid), dtype=pos_embedding.dtype, device=pos_embedding.device)
    img = torch.matmul(a, pos_embedding[0, 1:].reshape(old, old * dim))  # rows: (grid, old * dim)
    img = img.reshape(grid, old, dim).permute(1, 0, 2).reshape(old, grid * dim)
    img = torch.matmul(a, img).reshape(grid, grid, dim).permute(1, 0, 2).reshape(1, grid * grid, dim)  # columns
    return torch.cat([pos_embedding[:, :1], img], dim=1)


def interpolate_embeddings(state_dict: dict[str, torch.Tensor], image_size: int,
                           patch_size: int) -> dict[str, torch.Tensor]:
    """A copy of a ViT ``state_dict`` whose position embedding fits ``image_size`` px inputs.

    For loading weights trained at one resolution into a model built for another (``image_size``
    knob); ``model.load_state_dict`` and :func:`edgecnn.weights.load_weights` apply it by themselves.
    """
    out = dict(state_dict)
    key = "encoder.pos_embedding"
    if key in out:  # a missing key is the loader's to report
        out[key] = resize_pos_embedding(out[key], image_size // patch_size)
    return out


class Encoder(nn.Module):
    """Position embedding (``pos_embedding``, learned for a ``grid`` x ``grid`` patch grid), dropout,
    ``layers.encoder_layer_{i}``, final LayerNorm ``ln``."""

    def __init__(self, grid: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
                 dropout: float, gelu: str = "none") -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, grid * grid + 1, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", TransformerBlock(hidden_dim, num_heads, mlp_dim, dropout,
                                                    act_layer=partial(nn.GELU, approximate=gelu)))
            for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = resize_pos_embedding(self.pos_embedding, math.isqrt(x.shape[1] - 1))
        return self.ln(self.layers(self.dropout(x + pos)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "pos_embedding"
        pos = state_dict.get(key)
        if pos is not None and pos.dim() == 3 and pos.shape != self.pos_embedding.shape:
            state_dict[key] = resize_pos_embedding(pos, math.isqrt(self.pos_embedding.shape[1] - 1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class VisionTransformer(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                 patch_size: int = 16, num_layers: int = 12, num_heads: int = 12, hidden_dim: int = 768,
                 mlp_dim: int = 3072, dropout: float = 0.0, gelu_tanh: bool = False) -> None:
        super().__init__()
        image_size, patch_size = RES.check(image_size), PATCH_SIZE.check(patch_size)
        num_layers, num_heads = NUM_LAYERS.check(num_layers), NUM_HEADS.check(num_heads)
        hidden_dim, mlp_dim = HIDDEN_DIM.check(hidden_dim), MLP_DIM.check(mlp_dim)
        dropout = check_rate("dropout", dropout)
        if not isinstance(gelu_tanh, bool):
            raise EdgeCNNError(f"gelu_tanh must be True or False, got {gelu_tanh!r}")
        if image_size < patch_size:
            raise EdgeCNNError(f"image_size ({image_size}) must be at least patch_size ({patch_size})")
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(in_chans, hidden_dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(image_size // patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout,
                               "tanh" if gelu_tanh else "none")
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))
        fan_in = in_chans * patch_size * patch_size  # torchvision's patchify-stem initialisation
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.trunc_normal_(self.heads.head.weight, std=0.02)
        nn.init.zeros_(self.heads.head.bias)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of ``state_dict`` whose position embedding fits this model
        (:func:`edgecnn.weights.load_weights` applies it before comparing shapes)."""
        return interpolate_embeddings(state_dict, self.image_size, self.patch_size)

    def no_weight_decay(self) -> set[str]:
        """Parameter names AdamW leaves undecayed beyond norms and biases (the DeiT recipe)."""
        return {"class_token", "encoder.pos_embedding"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output tokens (batch, 1 + patches, hidden_dim), class token first."""
        x = self.conv_proj(x)  # (b, dim, gh, gw)
        b, dim, gh, gw = x.shape
        if gh != gw:
            raise EdgeCNNError(f"a ViT takes square inputs, got a {gh}x{gw} patch grid")
        x = x.reshape(b, dim, gh * gw).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(b, -1, -1), x], dim=1)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.forward_features(x)[:, 0])


def _image_size(knobs: dict) -> int:
    return int(RES.check(knobs["image_size"]))


_PAPER = "Dosovitskiy et al. 2021, arXiv:2010.11929"
for _name, (_patch, _layers, _heads, _dim, _mlp) in CONFIGS.items():
    register(ModelSpec(
        name=_name, family="vit", builder=VisionTransformer, default_res=224,
        # one patch is the smallest input; 32 px keeps every variant above the registry's floor
        min_res=max(32, _patch),
        tunable={"image_size": 224, "patch_size": _patch, "num_layers": _layers, "num_heads": _heads,
                 "hidden_dim": _dim, "mlp_dim": _mlp, "gelu_tanh": False},
        res_for=_image_size, aliases=(_name.replace("_", ""),) if _name.startswith("vit") else ("deit_ti",),
        paper=_PAPER if _name.startswith("vit") else "Touvron et al. 2021, arXiv:2012.12877"))
