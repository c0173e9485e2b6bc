"""The plan's rules on fingerprints of several kinds of data, and the parser's record of explicit options."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine.plan import plan
from engine.options.config import Config, parse_args
from engine.plan.fingerprint_data import colour_stats, fingerprint, pose_stats
from engine_testkit import record_calibration_batches
from loaders.datasets import Dataset, Split


def _fp(**over):
    fp = {"native_size": 28, "channels": 3, "colour": True, "illuminant_spread": 0.01, "pose_structure": 0.1,
          "asymmetry": {"hflip": 0.1, "vflip": 0.1, "rot90": 0.1}, "n_train": 7000, "n_val": 1000, "n_test": 2000,
          "classes": 7, "imbalance_ratio": 50.0, "groups": False}
    return fp | over


def cost_table(table):
    return lambda model, size: table[(model, size)]


def test_small_images_get_no_resampling_crop_and_the_model_the_budget_affords():
    cheap = {("resnet18", 28): 0.05, ("seedcnn", 28): 0.0005}
    p = plan.derive(_fp(), cost_table(cheap), 300, "cpu")["options"]
    assert p["model.name"] == "seedcnn" and p["data.image_size"] == 28
    assert p["data.crop_scale_min"] == 1.0 and p["data.crop_ratio"] == 1.0
    assert plan.MIN_EPOCHS <= p["train.epochs"] <= plan.MAX_EPOCHS
    fast = {("resnet18", 28): 1e-5, ("seedcnn", 28): 1e-6}  # a GPU: the larger model fits the same budget
    assert plan.derive(_fp(), cost_table(fast), 300, "cuda")["options"]["model.name"] == "resnet18"


def test_epochs_follow_the_budget():
    cost = lambda m, s: 0.001
    short = plan.derive(_fp(), cost, 120, "cpu")["options"]["train.epochs"]
    longer = plan.derive(_fp(), cost, 240, "cpu")["options"]["train.epochs"]
    assert longer > short and longer <= plan.MAX_EPOCHS


def test_model_size_and_epochs_given_leave_nothing_to_time_and_the_ema_follows_the_given_epochs():
    def never(model, size):
        raise AssertionError("timed a step whose result decides nothing")

    short = plan.derive(_fp(), never, 300, "cpu", model="seedcnn", size=28, epochs=2)
    assert short["candidates"] == [{"model": "seedcnn", "size": 28, "seconds_per_image": None,
                                    "epochs_affordable": None}]
    assert short["options"]["train.epochs"] == 2 and short["options"]["train.ema"] == 0.0  # 2 x 54 steps
    many = plan.derive(_fp(), never, 300, "cpu", model="seedcnn", size=28, epochs=20)["options"]
    assert many["train.ema"] == 0.99  # 20 x 54 steps: the EMA of a run that long
    timed = plan.derive(_fp(), lambda m, s: 0.001, 300, "cpu", model="seedcnn", epochs=2)  # size left: timed
    assert timed["candidates"][0]["seconds_per_image"] == 0.001 and timed["options"]["train.epochs"] == 2


def test_large_photographs_get_zoom_crops_colour_jitter_and_colour_constancy():
    fp = _fp(native_size=450, illuminant_spread=0.03)
    p = plan.derive(fp, lambda m, s: 0.0001 * (s / 64) ** 2 * (10 if m == "resnet18" else 1), 300, "cpu")["options"]
    assert p["data.crop_scale_min"] < 1.0 and p["data.color_jitter"] > 0
    assert p["data.color_constancy"] == "shades_of_gray"
    assert p["data.image_size"] in (64, 96, 128, 224)


def test_grey_scans_with_a_fixed_pose_keep_their_orientation():
    fp = _fp(colour=False, channels=1, native_size=28, asymmetry={"hflip": 0.3, "vflip": 1.2, "rot90": 1.1},
             imbalance_ratio=1.5)
    p = plan.derive(fp, lambda m, s: 0.0005, 300, "cpu")["options"]
    assert (p["data.hflip"], p["data.vflip"], p["data.rot90"]) == (True, False, False)
    assert p["data.color_jitter"] == 0 and p["data.color_constancy"] == "none"
    assert p["train.select"] == "accuracy" and p["sampler.kind"] == "uniform"


def test_imbalance_selects_balanced_accuracy_and_a_leaning_sampler():
    p = plan.derive(_fp(imbalance_ratio=60), lambda m, s: 0.0005, 300, "cpu")["options"]
    assert p["train.select"] == "balanced_accuracy" and p["eval.posthoc_adjust"]
    assert p["sampler.kind"] == "balanced" and p["sampler.alpha"] == 0.5


def test_a_benchmark_file_is_judged_by_accuracy_other_imbalanced_data_by_balanced_accuracy():
    """The same imbalance, two ways of being judged: a MedMNIST-style file with its own val/test
    split selects for accuracy (its published figure) with natural sampling and no prior
    correction; the same counts anywhere else select balanced accuracy with a leaning sampler."""
    cost = lambda m, s: 0.0005
    for ratio in (4.0, 12.0, 60.0):
        bench = plan.derive(_fp(imbalance_ratio=ratio, benchmark_split=True), cost, 300, "cpu")["options"]
        other = plan.derive(_fp(imbalance_ratio=ratio, benchmark_split=False), cost, 300, "cpu")["options"]
        assert bench["train.select"] == "accuracy" and not bench["eval.posthoc_adjust"]
        assert bench["sampler.kind"] == "uniform" and bench["sampler.alpha"] == 0.0
        assert other["train.select"] == "balanced_accuracy" and other["eval.posthoc_adjust"]
        assert (other["sampler.kind"] == "balanced") == (ratio >= plan.SEVERE)
    balanced = plan.derive(_fp(imbalance_ratio=1.2, benchmark_split=True), cost, 300, "cpu")["options"]
    assert balanced["train.select"] == "accuracy" and not balanced["eval.posthoc_adjust"]


def test_fingerprint_knows_a_benchmark_split_from_a_carved_one(tmp_path):
    from loaders.datasets import load_dataset, with_splits
    from loaders.spec import DataSpec
    rng = np.random.default_rng(3)
    arrays = {}
    for part, n in (("train", 120), ("val", 30), ("test", 30)):
        arrays[f"{part}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{part}_labels"] = (rng.random((n, 1)) < 0.2).astype(np.int64)
    np.savez(tmp_path / "official.npz", **arrays)
    np.savez(tmp_path / "train_only.npz", train_images=arrays["train_images"], train_labels=arrays["train_labels"])
    official = load_dataset(DataSpec(path=str(tmp_path / "official.npz")), seed=0)
    carved = load_dataset(DataSpec(path=str(tmp_path / "train_only.npz")), seed=0)
    assert fingerprint(official)["benchmark_split"] and not fingerprint(carved)["benchmark_split"]
    fold = with_splits(official, official.train, official.val, official.test)  # engine.cv's re-split folds
    assert not fingerprint(fold)["benchmark_split"]


def test_batch_size_leaves_enough_updates_per_epoch():
    for n in (300, 4189, 7007, 100_000):
        b = plan.batch_size(n)
        assert 16 <= b <= 128 and (n // b >= plan.MIN_STEPS_PER_EPOCH or b == 16)


def test_pose_stats_tell_centred_blobs_from_anatomy():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / 60)[None, :, :, None] * 200
    blobs = np.repeat(blob + rng.normal(0, 10, (64, 32, 32, 1)), 3, -1).clip(0, 255).astype(np.uint8)
    top_heavy = np.where(yy < 12, 220, 30)[None, :, :, None] + rng.normal(0, 10, (64, 32, 32, 1))
    scans = np.repeat(top_heavy, 3, -1).clip(0, 255).astype(np.uint8)
    sym, fixed = pose_stats(blobs)["asymmetry"], pose_stats(scans)["asymmetry"]
    assert max(sym.values()) < plan.SYMMETRY_TOLERANCE
    assert fixed["hflip"] < plan.SYMMETRY_TOLERANCE and fixed["vflip"] > 1 and fixed["rot90"] > 0.5
    assert not colour_stats(scans)["colour"] and colour_stats(np.stack([scans[..., 0] * 0 + 200, scans[..., 1],
                                                                        scans[..., 2] // 2], -1))["colour"]


def test_fingerprint_of_an_array_dataset():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(90), np.ones(10)].astype(np.int64)
    split = Split(labels=labels, images=rng.integers(0, 255, (100, 28, 28), dtype=np.uint8))
    ds = Dataset("t", "t", ["a", "b"], split, split.subset(np.arange(10)), split.subset(np.arange(10)), 28)
    fp = fingerprint(ds)
    assert fp["channels"] == 1 and not fp["colour"] and fp["native_size"] == 28
    assert fp["imbalance_ratio"] == 9.0 and fp["class_counts"] == [90, 10] and fp["groups"] is False


def test_parser_returns_the_explicit_options_beside_the_config_and_attaches_nothing(tmp_path):
    parsed = parse_args(["--data", "synthetic", "--epochs", "3", "--data.hflip", "false"])
    assert parsed.explicit == {"data.path", "train.epochs", "data.hflip"}
    assert parse_args([]).explicit == frozenset()
    assert set(vars(parsed.config)) == {f.name for f in dataclasses.fields(Config)}  # nothing attached after construction
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.explicit = frozenset()


@pytest.mark.parametrize("argv", [["--preset", "smoke"], ["--run.plan", "off"]])
def test_presets_and_plan_off_skip_the_plan(tmp_path, argv):
    parsed = parse_args(argv + ["--data", "synthetic"])
    cfg = parsed.config
    assert plan.planned(cfg, parsed.explicit, None, None, tmp_path) is cfg and not (tmp_path / "plan.json").exists()


def test_planned_writes_plan_json_respects_explicit_options_and_leaves_the_parsed_config(tmp_path, capsys):
    import torch
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(150), np.ones(50), np.full(10, 2)].astype(np.int64)
    split = Split(labels=labels, images=rng.integers(0, 255, (210, 16, 16, 3), dtype=np.uint8))
    ds = Dataset("t", "t", ["a", "b", "c"], split, split.subset(np.arange(20)), split.subset(np.arange(20)), 16)
    parsed = parse_args(["--data", "x.npz", "--epochs", "2", "--lr", "0.01", "--budget", "0.05"])
    cfg = parsed.config
    before = cfg.to_dict()
    new = plan.planned(cfg, parsed.explicit, ds, torch.device("cpu"), tmp_path)
    assert cfg.to_dict() == before  # the parsed config is never changed: the plan returns a new one
    assert plan.planned(cfg, None, ds, torch.device("cpu"), tmp_path / "none") is cfg  # not from a command line
    cfg = new
    assert cfg.train.epochs == 2 and cfg.optim.lr == 0.01  # the user's options win
    assert cfg.data.crop_scale_min == 1.0 and cfg.data.image_size == 16 and cfg.train.select == "balanced_accuracy"
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert "train.epochs" not in saved["applied"] and saved["fingerprint"]["imbalance_ratio"] == 15.0
    assert saved["candidates"][0]["seconds_per_image"] > 0 and saved["budget_seconds"] == 3.0
    assert "input_seconds_per_image" in saved
    assert capsys.readouterr().out.count("plan:") == 3


def test_calibration_gives_up_a_hopeless_candidate_before_allocating_its_probe_batch(monkeypatch):
    import torch
    from engine.plan import calibrate
    batches = record_calibration_batches(monkeypatch)
    cpu = torch.device("cpu")
    assert calibrate.seconds_per_image("mlp", 8, 3, cpu, batch=32, seconds=0.01, give_up_after=1e-12) > 0
    assert batches and set(batches) == {calibrate.SCOUT_IMAGES}  # scouted, then given up: no 32-image step
    batches.clear()
    assert calibrate.seconds_per_image("mlp", 8, 3, cpu, batch=32, seconds=0.01, give_up_after=10.0) > 0
    assert 32 in batches  # affordable: timed on the full probe batch


def test_augmentation_is_timed_and_costs_more_from_larger_native_images():
    import torch

    from engine.plan.calibrate import input_seconds_per_image
    fp = _fp(native_size=224, illuminant_spread=0.03)
    spec = plan._augment_spec(parse_args(["--data", "x.npz"]).config, fp, 64)
    assert spec.color_constancy and spec.jitter == 0.2 and spec.scale_min == 0.4  # the plan's options, as loaders read them
    cpu = torch.device("cpu")
    small = input_seconds_per_image(96, spec, cpu, batch=16, seconds=0.2)
    large = input_seconds_per_image(448, spec, cpu, batch=16, seconds=0.2)
    assert 0 < small < large < 1.0


def test_tta_is_on_only_when_every_flip_and_quarter_turn_holds():
    symmetric = plan.derive(_fp(), lambda m, s: 0.0005, 300, "cpu")["options"]
    assert symmetric["run.tta"] is True
    posed = _fp(asymmetry={"hflip": 0.3, "vflip": 1.2, "rot90": 1.1})
    assert plan.derive(posed, lambda m, s: 0.0005, 300, "cpu")["options"]["run.tta"] is False
