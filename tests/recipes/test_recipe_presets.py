"""The recipe presets resolve to what the experiments in docs/recipes.md chose, and flags still override them."""
import pytest

from engine.options.config import PRESETS, ConfigError, parse_args
from engine.run.loop import autocast_dtype, fast_bf16


@pytest.mark.parametrize("name", ["dermamnist", "ham10000"])
def test_preset_resolves_and_round_trips(name):
    cfg = parse_args(["--preset", name]).config
    assert cfg.run.preset == name
    assert cfg.data.image_size > 0 and cfg.train.epochs >= 1 and cfg.model.name
    again = type(cfg).from_dict(cfg.to_dict())  # config.json -> Config, as --resume does
    assert again == cfg


def test_flags_after_the_preset_win():
    cfg = parse_args(["--preset", "dermamnist", "--epochs", "3", "--model", "mlp", "--amp"]).config
    assert (cfg.train.epochs, cfg.model.name, cfg.train.amp) == (3, "mlp", True)
    assert cfg.data.image_size == 28  # untouched preset values stay


def test_dermamnist_amp_is_native_only():
    # --amp on a CPU without native bf16 would be ~10x slower; the preset keeps fp32 there.
    import torch
    cfg = parse_args(["--preset", "dermamnist", "--amp"]).config
    assert cfg.train.amp_dtype == "auto"
    cpu = torch.device("cpu")
    assert autocast_dtype(cfg, cpu) == (torch.bfloat16 if fast_bf16(cpu) else None)
    cfg.train.amp_dtype = "bf16"
    assert autocast_dtype(cfg, cpu) == torch.bfloat16  # an explicit request is honoured


def test_dermamnist_preset_augments_without_resampling():
    # The recipe's finding: at 28 px a crop is a blur; only flips and quarter turns are kept.
    cfg = parse_args(["--preset", "dermamnist"]).config
    assert (cfg.data.crop_scale_min, cfg.data.crop_ratio) == (1.0, 1.0)
    assert cfg.data.hflip and cfg.data.vflip and cfg.data.rot90 and cfg.data.color_jitter == 0


def test_ham10000_preset_balances_classes():
    cfg = parse_args(["--preset", "ham10000"]).config
    assert cfg.sampler.kind == "balanced" and 0 < cfg.sampler.alpha <= 1


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown preset 'dermamnis'.*dermamnist"):
        parse_args(["--preset", "dermamnis"]).config
    assert {"dermamnist", "ham10000"} <= set(PRESETS)
