"""The plan: training settings derived from the dataset's fingerprint and this device's speed.

`derive(fp, cost, budget_s, device_type)` is the rule book (pure: `cost(model, size)` gives
seconds per training image, the calibrated step plus the calibrated augmentation, so tests
pass a formula); `planned(cfg, ds, device, out)` is the
hook engine/run/build.py calls before the config is resolved: it measures the fingerprint,
calibrates, and returns a new Config with every option the user did not give on the command
line filled in (the parsed one is left as it was), prints the plan in a few lines and writes
`plan.json` in the run folder.
Each rule's reason is in docs/plan.md; the constants below are the rules' only numbers.
A preset is a named plan: with `--preset`, or `--run.plan off`, nothing here runs.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch

from common.atomic import atomic_write_json
from engine.options.config import Config, set_option

log = logging.getLogger("medtrain.plan")

DEFAULT_BUDGET_MIN = 5.0     # a MedMNIST-size set (7k images, 28 px) trains in about this on 2 CPU cores
SMALL_NATIVE = 64            # at or below: no resampling crop (any crop is a blur at this size)
MIN_EPOCHS = 24              # a candidate that cannot train this long in the budget is too slow
MAX_EPOCHS = 60              # beyond this the one-cycle schedule's extra epochs bought nothing measurable
MIN_STEPS_PER_EPOCH = 50     # batch size: the largest power of two leaving this many updates per epoch
# The loop's own cost over the calibrated step + augmentation (batch gather, sampler, EMA,
# metrics, validation, per-epoch writes): measured 1.62x on HAM10000 at 64 px and 1.43x on
# DermaMNIST at 28 px, 2-core CPU (bench/results/cpu-issue19.md).
OVERHEAD = 1.6
IMBALANCED = 3.0             # largest/smallest class count from which the selection metric is balanced
SEVERE = 10.0                # ... and from which the sampler leans toward rare classes (alpha 0.5)
SYMMETRY_TOLERANCE = 0.5     # a flip/rotation is used when the mean image changes less than this under it
CAST_SPREAD = 0.02           # illuminant chromaticity spread above which colour constancy is applied
PHOTO_NATIVE = 128           # colour constancy only for camera-resolution photographs


def candidates(native: int, device_type: str) -> list[tuple[str, int]]:
    """(model, input size) from most to least capable; the plan takes the first that fits."""
    if native <= SMALL_NATIVE:
        return [("resnet18", native), ("seedcnn", native)]
    sizes = sorted({min(native, 224), min(native, 128), min(native, 96), min(native, 64)}, reverse=True)
    ladder = [("resnet18", s) for s in sizes if s >= 128] + [("seedcnn", s) for s in sizes if s <= 128]
    return ladder if device_type == "cuda" else [c for c in ladder if c[1] <= 224]


def epochs_affordable(spi: float, fp: dict, budget_s: float) -> int:
    per_epoch = spi * OVERHEAD * (fp["n_train"] + fp["n_val"] / 3)  # evaluation costs ~1/3 of a training step
    return int(budget_s // max(per_epoch, 1e-9))


def batch_size(n_train: int) -> int:
    return int(min(128, max(16, 2 ** math.floor(math.log2(max(n_train / MIN_STEPS_PER_EPOCH, 1))))))


def augmentation(fp: dict, size: int) -> dict:
    asym = fp["asymmetry"]
    out = {"data.hflip": asym["hflip"] < SYMMETRY_TOLERANCE, "data.vflip": asym["vflip"] < SYMMETRY_TOLERANCE,
           "data.rot90": asym["rot90"] < SYMMETRY_TOLERANCE}
    if fp["native_size"] <= SMALL_NATIVE:
        out |= {"data.crop_scale_min": 1.0, "data.crop_ratio": 1.0}  # flips and quarter turns only
    else:
        out |= {"data.crop_scale_min": 0.4, "data.crop_ratio": 4 / 3}  # crops as zoom: 40-100% of the area
    out["data.color_jitter"] = (0.1 if fp["native_size"] <= SMALL_NATIVE else 0.2) if fp["colour"] else 0.0
    cc = fp["colour"] and fp["native_size"] >= PHOTO_NATIVE and fp["illuminant_spread"] >= CAST_SPREAD
    out["data.color_constancy"] = "shades_of_gray" if cc else "none"
    return out


def imbalance(fp: dict) -> dict:
    """Selection metric, prior correction and sampler: they follow how the data is judged.
    A benchmark file (official val/test splits: MedMNIST) is judged by accuracy, so the kept
    epoch is chosen for accuracy, training keeps the natural prior and no post-hoc correction
    moves the decision off it (argmax under the shared prior is already the accuracy rule);
    other imbalanced data is judged by balanced accuracy (docs/plan.md, rule 6)."""
    ratio = fp["imbalance_ratio"]
    if fp.get("multilabel"):  # findings are judged by their mean AUC (ChestMNIST); BCE is weighted per finding
        severe = ratio >= SEVERE
        return {"train.select": "auc_macro", "eval.posthoc_adjust": False, "optim.label_smoothing": 0.0,
                "sampler.kind": "balanced" if severe else "uniform", "sampler.alpha": 0.5 if severe else 0.0}
    if fp.get("benchmark_split"):
        return {"train.select": "accuracy", "eval.posthoc_adjust": False,
                "sampler.kind": "uniform", "sampler.alpha": 0.0}
    out = {"train.select": "balanced_accuracy" if ratio >= IMBALANCED else "accuracy",
           "eval.posthoc_adjust": ratio >= IMBALANCED}
    if ratio >= SEVERE:
        out |= {"sampler.kind": "balanced", "sampler.alpha": 0.5}
    else:
        out |= {"sampler.kind": "uniform", "sampler.alpha": 0.0}
    return out


def _first_affordable(ladder: list[tuple[str, int]], cost, fp: dict, budget_s: float) -> tuple[list[dict], dict]:
    """(the candidates timed, the first affording MIN_EPOCHS epochs or else the cheapest, the last)."""
    tried = []
    for model, size in ladder:
        spi = cost(model, size)
        affordable = epochs_affordable(spi, fp, budget_s)
        tried.append({"model": model, "size": size, "seconds_per_image": spi, "epochs_affordable": affordable})
        if affordable >= MIN_EPOCHS:
            break
    return tried, tried[-1]  # nothing fits: the cheapest, for at least a few epochs


def derive(fp: dict, cost, budget_s: float, device_type: str, model: str = "", size: int = 0,
           epochs: int = 0) -> dict:
    """Option values (dotted keys) and the candidates tried, from a fingerprint and a cost function.
    A `model`, `size` or `epochs` the user gave replaces that part of every candidate; with all
    three given the budget decides nothing, so nothing is timed (`cost` is not called)."""
    if model and size and epochs:
        tried = [{"model": model, "size": size, "seconds_per_image": None, "epochs_affordable": None}]
        choice = tried[0]
    else:
        ladder = [(model or m, size or s) for m, s in candidates(fp["native_size"], device_type)]
        tried, choice = _first_affordable(list(dict.fromkeys(ladder)), cost, fp, budget_s)  # de-duplicated, in order
    model, size = choice["model"], choice["size"]
    batch = batch_size(fp["n_train"])
    epochs = epochs or max(min(choice["epochs_affordable"], MAX_EPOCHS), 4)  # the EMA below follows the epochs run
    steps = epochs * max(fp["n_train"] // batch, 1)
    base_lr = 2e-3 if model == "seedcnn" else 1e-3
    options = {"model.name": model, "data.image_size": size, "data.batch_size": batch,
               "train.epochs": epochs, "optim.lr": round(base_lr * math.sqrt(batch / 128), 6),
               "optim.weight_decay": 0.05, "optim.label_smoothing": 0.1, "schedule.name": "onecycle",
               "model.dropout": 0.1, "train.ema": 0.999 if steps >= 3000 else (0.99 if steps >= 300 else 0.0),
               "train.amp": device_type == "cuda"}
    options |= augmentation(fp, size) | imbalance(fp)
    # TTA averages all 8 flips/quarter turns (engine/score/tta.py): fair only when every one holds
    options["run.tta"] = all(options[f"data.{k}"] for k in ("hflip", "vflip", "rot90"))
    return {"options": options, "candidates": tried, "budget_seconds": budget_s}


# ----------------------------------------------------------------------------- hook

def planned(cfg: Config, explicit: frozenset[str] | None, ds, device: torch.device, out: Path,
            loader: str = "plain") -> Config:
    """A copy of `cfg` with the options the user left out of `explicit` (engine.options.config.Parsed) taken
    from the plan; `cfg` itself when the plan does not run (a preset, --run.plan off, --resume,
    torchrun, `explicit` None: not from a command line)."""
    if explicit is None or cfg.run.plan == "off" or "run.preset" in explicit or cfg.run.resume:
        return cfg
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        log.info("plan: not applied under torchrun (each rank would calibrate differently); give the options")
        return cfg
    plan = make_plan(cfg, ds, device, explicit, loader)
    chosen = {k: v for k, v in plan["options"].items() if k not in explicit}
    if "model.pretrained" in explicit and "optim.lr" not in explicit:
        chosen["optim.lr"] = 3e-4  # fine-tuning: a pretrained backbone is moved, not rebuilt
    new = copy.deepcopy(cfg)
    for key, value in chosen.items():
        set_option(new, key, value)
    plan |= {"applied": chosen, "kept_from_command_line": sorted(explicit & set(plan["options"]))}
    atomic_write_json(out / "plan.json", plan)  # single process only (see above): no rank to guard
    print(describe_plan(plan, new))
    return new


def _augment_spec(cfg: Config, fp: dict, size: int):
    """The training augmentation a loader would run with this size's planned options, built
    the way the loaders build it (config -> LoaderSpec -> AugmentSpec)."""
    from engine.options.resolve import loader_spec
    from loaders.base import augment_spec
    trial = copy.deepcopy(cfg)
    for key, value in augmentation(fp, size).items():
        set_option(trial, key, value)
    return augment_spec(loader_spec(trial), size, train=True)


def make_plan(cfg: Config, ds, device: torch.device, explicit: frozenset, loader: str) -> dict:
    """The fingerprint, the calibrated candidates and the options the rules derive from them."""
    from engine.plan.calibrate import input_seconds_per_image, seconds_per_image
    from engine.plan.fingerprint_data import fingerprint
    fp = fingerprint(ds)
    budget_s = 60 * (cfg.run.budget or DEFAULT_BUDGET_MIN)
    probe_batch = 32 if fp["native_size"] > SMALL_NATIVE else 128
    too_slow = budget_s / (MIN_EPOCHS * OVERHEAD * max(fp["n_train"], 1))  # per image: no need to measure on
    # Per image, at or under this the budget affords the MAX_EPOCHS cap: every choice derive()
    # makes from the cost is the same for any lower figure, so an upper bound settles it.
    settled = budget_s / (MAX_EPOCHS * OVERHEAD * max(fp["n_train"] + fp["n_val"] / 3, 1))
    devices = [device] if device.type == "cuda" else []
    input_costs: dict[int, float] = {}

    def cost(model: str, size: int) -> float:
        if size not in input_costs:  # first: what it leaves of `settled` is the step's share
            input_costs[size] = input_seconds_per_image(fp["native_size"], _augment_spec(cfg, fp, size), device,
                                                        probe_batch, settled_below=settled)
        return input_costs[size] + seconds_per_image(model, size, ds.num_classes, device, probe_batch,
                                                     give_up_after=too_slow,
                                                     settled_below=max(settled - input_costs[size], 0.0))

    with torch.random.fork_rng(devices=devices):  # calibration draws random inputs: the run's RNG is untouched
        plan = derive(fp, cost, budget_s, device.type, model=cfg.model.name if "model.name" in explicit else "",
                      size=cfg.data.image_size if "data.image_size" in explicit else 0,
                      epochs=cfg.train.epochs if "train.epochs" in explicit else 0)
    plan["input_seconds_per_image"] = {str(size): value for size, value in input_costs.items()}
    from loaders.base import CLAHE_LOADERS
    if loader not in CLAHE_LOADERS:  # colour constancy runs in the device augmentation this loader skips
        plan["options"]["data.color_constancy"] = "none"
    return plan | {"fingerprint": fp}


def describe_plan(plan: dict, cfg: Config) -> str:
    fp = plan["fingerprint"]
    aug = [n for n, on in (("hflip", cfg.data.hflip), ("vflip", cfg.data.vflip), ("rot90", cfg.data.rot90)) if on]
    crop = "no crop" if cfg.data.crop_scale_min >= 1.0 else f"crop {cfg.data.crop_scale_min:.2f}-1 of the area"
    return "\n".join([
        f"plan: {fp['n_train']} train images, {fp['classes']} {'findings (multi-label)' if fp.get('multilabel') else 'classes'} "
        f"(imbalance {fp['imbalance_ratio']:.1f}), "
        f"native {fp['native_size']} px, {'colour' if fp['colour'] else 'grey'}{', groups' if fp['groups'] else ''}",
        f"plan: {cfg.model.name} at {cfg.data.image_size} px, {cfg.train.epochs} epochs in a "
        f"{plan['budget_seconds'] / 60:g}-minute budget, batch {cfg.data.batch_size}, lr {cfg.optim.lr:g}",
        f"plan: {crop}, {'/'.join(aug) or 'no flips'}, jitter {cfg.data.color_jitter:g}, "
        f"colour constancy {cfg.data.color_constancy}; sampler {cfg.sampler.kind} (alpha {cfg.sampler.alpha:g}), "
        f"select {cfg.train.select}, post-hoc prior correction {'on' if cfg.eval.posthoc_adjust else 'off'}, "
        f"TTA {'on' if cfg.run.tta else 'off'}",
    ])
