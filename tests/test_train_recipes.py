"""The per-family default training recipe (edgecnn.train.recipes): coverage, resolution, flags that override it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgecnn.cli import build_parser
from edgecnn.cli.train_cmd import build_config
from edgecnn.models import create_model, get_spec, list_models
from edgecnn.train.config import DEFAULT_LR, DEFAULT_WD
from edgecnn.train.recipes import RECIPES, SHORT_RUN, SHORT_RUN_EPOCHS, recipe_for
from edgecnn.train.trainer import choose_res


def _config(*flags: str):  # noqa: ANN202 (TrainConfig)
    return build_config(build_parser().parse_args(["train", *flags]))


def test_every_registered_family_has_exactly_one_recipe():
    families = {get_spec(name).family for name in list_models()}
    assert families == set(RECIPES)  # a new family needs a recipe; a removed one leaves none behind
    for recipe in RECIPES.values():
        assert recipe.optimizer in DEFAULT_LR and 0 <= recipe.warmup < 1 and recipe.small_res >= 28


@pytest.mark.parametrize("model", ["mobilenet_v2", "lenet5", "vgg11", "resnet18"])
@pytest.mark.parametrize("epochs", [1, 10])
def test_unset_flags_take_the_family_recipe(model, epochs):
    recipe = recipe_for(model)
    cfg = _config(model, "--data", "fashion-mnist", "--epochs", str(epochs))
    assert (cfg.optimizer, cfg.batch_size, cfg.label_smoothing) == (
        recipe.optimizer, recipe.batch_size, recipe.label_smoothing)
    assert cfg.warmup_epochs == pytest.approx(recipe.warmup * epochs)  # a fraction of the run, not fixed epochs
    short = epochs <= SHORT_RUN_EPOCHS
    lr = recipe.short_lr if short and recipe.short_lr else recipe.lr
    assert cfg.peak_lr == pytest.approx(lr * recipe.batch_size / 256)
    assert cfg.decay == recipe.weight_decay
    assert cfg.crop_scale == (SHORT_RUN["crop_scale"] if short else recipe.crop_scale)
    assert cfg.ema_decay is None and cfg.random_erase == 0  # off by default, short runs included


def test_short_runs_from_scratch_take_the_short_run_rate_and_fine_tuning_does_not():
    recipe = recipe_for("mobilenet_v2")
    assert recipe.short_lr and recipe.short_lr > recipe.lr
    one = _config("mobilenet_v2", "--data", "fashion-mnist", "--epochs", "1")
    assert one.peak_lr == pytest.approx(recipe.short_lr * recipe.batch_size / 256)
    tuned = _config("mobilenet_v2", "--data", "fashion-mnist", "--epochs", "1", "--pretrained", "imagenet")
    assert tuned.peak_lr == pytest.approx(recipe.lr * recipe.batch_size / 256)


def test_explicit_flags_override_the_recipe():
    cfg = _config("mobilenet_v2", "--data", "fashion-mnist", "--epochs", "1", "--batch-size", "32",
                  "--optimizer", "sgd", "--lr", "0.05", "--weight-decay", "0.001", "--warmup-epochs", "0",
                  "--crop-scale", "0.5", "--label-smoothing", "0", "--res", "40")
    assert (cfg.batch_size, cfg.optimizer, cfg.peak_lr, cfg.decay) == (32, "sgd", 0.05, 0.001)
    assert (cfg.warmup_epochs, cfg.crop_scale, cfg.label_smoothing, cfg.res) == (0, 0.5, 0, 40)
    other = "sgd" if recipe_for("mobilenet_v2").optimizer == "adamw" else "adamw"
    cfg = _config("mobilenet_v2", "--data", "fashion-mnist", "--optimizer", other, "--batch-size", "64")
    # the recipe's lr and weight decay belong to its optimizer: another one takes its generic defaults
    assert cfg.peak_lr == pytest.approx(DEFAULT_LR[other] * 64 / 256) and cfg.decay == DEFAULT_WD[other]


def test_small_images_are_upscaled_to_the_recipe_resolution():
    data = SimpleNamespace(native_res=28, in_chans=1)  # Fashion-MNIST
    for name in ("mobilenet_v2", "lenet5", "squeezenet1_1"):
        spec = get_spec(name)
        cfg = _config(name, "--data", "fashion-mnist")
        model = create_model(name, num_classes=10, in_chans=1)
        want = min(spec.default_res, max(28, spec.min_res, recipe_for(name).small_res))
        assert choose_res(cfg, data, model) == want, name
    assert choose_res(_config("lenet5", "--data", "fashion-mnist"), data, create_model("lenet5")) == 32  # fixed
    cfg = _config("mobilenet_v2", "--data", "fashion-mnist", "--res", "36")
    assert choose_res(cfg, data, create_model("mobilenet_v2", num_classes=10, in_chans=1)) == 36
    photos = SimpleNamespace(native_res=None, in_chans=3)  # photos of any size: the model's default
    cfg = _config("lenet5", "--data", "photos")
    assert choose_res(cfg, photos, create_model("lenet5", num_classes=10, in_chans=3)) == 32
