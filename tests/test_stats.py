"""model_stats against hand-computed numbers."""

import torch
from torch import nn

from edgecnn.stats import model_stats


def test_counts_a_conv_and_a_linear_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    s = model_stats(model, res=16, in_chans=3)
    assert s.params == (8 * 3 * 9 + 8) + (8 * 256 * 10 + 10)
    assert s.macs == 8 * 3 * 9 * 16 * 16 + 8 * 256 * 10  # biases and ReLU are not MACs
    assert s.weight_bytes_fp32 == 4 * s.params and s.weight_bytes_fp16 == 2 * s.params
    # the largest single layer is the conv (in-place ReLU and the Flatten view add no buffer): 3x16x16 in + 8x16x16 out, fp32
    assert s.peak_activation_bytes == (3 * 256 + 8 * 256) * 4
    assert s.input_shape == (1, 3, 16, 16)


def test_meta_and_real_models_agree():
    import edgecnn

    real = edgecnn.create_model("mobilenet_v2", alpha=0.5)
    with torch.device("meta"):
        meta = edgecnn.create_model("mobilenet_v2", alpha=0.5)
    assert model_stats(real, res=96) == model_stats(meta, res=96)
    assert real.training  # stats leave the mode as they found it
