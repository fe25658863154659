"""edgecnn.train.batchnorm: BatchNorm statistics recomputed when the running averages are stale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn.train.batchnorm import batch_norms, recompute, stale
from edgecnn.train.config import TrainConfig
from edgecnn.train.trainer import LAST, train


def test_statistics_are_stale_while_the_initial_values_weigh_more_than_e_minus_5():
    slow, fast = nn.BatchNorm2d(4, momentum=0.01), nn.BatchNorm2d(4, momentum=0.1)
    assert stale(slow, 78) and not stale(slow, 600)  # 0.99^78 = 0.46; 0.99^600 = 0.0024 < e^-5 = 0.0067
    assert stale(fast, 40) and not stale(fast, 78)  # 0.9^40 = 0.015; 0.9^78 = 0.0003
    assert not stale(nn.BatchNorm2d(4, momentum=None), 1)  # a cumulative average is never stale
    assert not stale(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), 1)


def test_recompute_averages_the_batches_with_dropout_off_and_restores_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(3, momentum=0.01)).train()
    batches = [torch.randn(8, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4 for _ in range(5)]
    assert recompute(model, iter(batches), torch.device("cpu")) == 40
    (bn,) = batch_norms(model)
    # the exact averages of the batches as they are: dropout (which scales kept values by 2) was off
    mean = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.01 and int(bn.num_batches_tracked) == 0 and model.training and model[0].training


def _run(data, out, **kw) -> dict:
    cfg = TrainConfig(model="mobilenet_v3_small", knobs={"alpha": 0.5}, data=str(data), out=str(out), epochs=2,
                      batch_size=32, res=32, workers=0, **kw)
    return train(cfg, progress=False).to_dict()


@pytest.mark.slow
def test_a_short_run_of_a_momentum_0_01_network_is_evaluated_with_recomputed_statistics(fmnist_small, tmp_path):
    from edgecnn.weights import load_checkpoint

    auto = _run(fmnist_small, tmp_path / "auto")
    off = _run(fmnist_small, tmp_path / "off", precise_bn=0)
    # 900 training images: 28 steps per epoch, 0.99^56 = 0.57 of the initial values left: stale
    assert [r["precise_bn_images"] for r in auto["history"]] == [896, 896]
    assert [r["precise_bn_images"] for r in off["history"]] == [0, 0]
    a, _ = load_checkpoint(tmp_path / "auto" / LAST)
    b, _ = load_checkpoint(tmp_path / "off" / LAST)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:  # training uses batch statistics: the same weights, other running statistics
        assert torch.equal(sa[k], sb[k]) == ("running_" not in k), k
    assert auto["test"]["top1"] > off["test"]["top1"] + 0.1, (auto["test"], off["test"])


def test_only_the_named_batch_norms_are_recomputed():
    """Frozen BatchNorms (eval mode while fine-tuning a frozen backbone) keep their statistics."""
    from edgecnn.train.batchnorm import updating
    from edgecnn.train.trainer import set_frozen

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),
                          nn.Flatten(), nn.Linear(64, 2))
    set_frozen(model, True)
    assert updating(model) == set()
    set_frozen(model, False)
    assert updating(model) == {"1", "3"}
    recompute(model, iter([torch.randn(4, 3, 4, 4) + 5]), torch.device("cpu"), names={"3"})
    assert torch.equal(model[1].running_mean, torch.zeros(4)) and not torch.equal(model[3].running_mean, torch.zeros(4))
