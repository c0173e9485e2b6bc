"""An engine.cv folder as one model: `--checkpoint CV_DIR` in engine.predict and engine.evaluate.

Each fold model scores the same rows (with TTA when on: the run's setting unless --tta /
--no-tta), its scores go through its own stored decision (its temperature, then its prior
correction: engine/score/decisions.py), and the K calibrated, corrected probabilities are averaged.
The ensemble's class is the argmax of that mean; a binary ensemble whose folds all store an
operating threshold applies the mean of their thresholds to the mean positive probability.
Each fold's rule is so applied before averaging, never mixed (a fold's tau on another fold's
scores), and the mean of thresholds each chosen to reach the target sensitivity on its own
validation split is the plain, documented choice (docs/engine.md).

Every image of the data the cv was trained on trained K-1 of the K models, so the ensemble is
only scored on other data (a held-out folder, an external test set); each fold on its own
test split is `--checkpoint CV_DIR/fold<i>` (engine/run/cv_fold.py).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from common.errors import ConfigError
from engine.run import cv_fold
from engine.score import data_scope, decisions
from engine.score.evaluation import Scores, scores
from kernels.confusion import confusion_matrix


def is_cv_folder(path: str | Path) -> bool:
    return cv_fold.recorded_options(Path(path)) is not None


def fold_dirs(root: str | Path) -> list[Path]:
    """The K fold run folders, all finished; refused while any is missing."""
    root = Path(root)
    k = int(cv_fold.recorded_options(root)["folds"])
    dirs = [root / f"fold{i}" for i in range(k)]
    missing = [d.name for d in dirs if not (d / "metrics.json").is_file() or not (d / "checkpoint.pt").is_file()]
    if missing:
        raise ConfigError(f"--checkpoint {root}: {len(missing)} of {k} folds not finished ({', '.join(missing)}); "
                          "re-run the same engine.cv command to finish them")
    return dirs


def combined_decision(fold_decisions: list[dict | None]) -> dict:
    """The rule applied to the mean of the folds' corrected probabilities: nothing more to
    correct (each fold's temperature and tau are already in), and the mean threshold when every
    fold has one. The folds' own values are kept for the record."""
    folds = [d or {} for d in fold_decisions]
    out = {"tau": 0.0, "temperature": 1.0, "log_prior": folds[0].get("log_prior"),
           "ensemble": {"folds": len(folds), "temperatures": [d.get("temperature", 1.0) for d in folds],
                        "taus": [d.get("tau", 0.0) for d in folds]}}
    thresholds = [d.get("threshold") for d in folds]
    if all(t is not None for t in thresholds):
        out |= {"threshold": sum(thresholds) / len(thresholds), "positive": 1,
                "target_sensitivity": folds[0].get("target_sensitivity")}
        out["ensemble"]["thresholds"] = thresholds
    return out


def mean_probabilities(fold_probs: list[torch.Tensor], fold_decisions: list[dict | None]) -> torch.Tensor:
    """Mean over folds of each fold's calibrated, prior-corrected probabilities."""
    return torch.stack([decisions.adjust(p, d) for p, d in zip(fold_probs, fold_decisions)]).mean(0)


def use_tta(options: dict, cfg) -> bool:
    """--tta / --no-tta when given, else the run's own setting (the plan's, engine/plan/plan.py)."""
    if options.get("tta"):
        return True
    if options.get("no_tta"):
        return False
    return bool(cfg.run.tta)


def score_ensemble(options: dict, prog: str):
    """`score_checkpoint` for a cv folder: one Scored whose run holds the combined decision."""
    from engine.score.inference import Scored  # inference dispatches here: imported late, no cycle
    from engine.run.restore import checkpoint_run, load_checked, restore
    dirs = fold_dirs(options["checkpoint"])
    first = restore(str(dirs[0]), options["device"])
    if data_scope.is_own_data(first, options["data"]):
        raise ConfigError(f"--checkpoint {options['checkpoint']}: every image of {options['data']} trained "
                          f"{len(dirs) - 1} of the {len(dirs)} fold models; score the ensemble on other data, "
                          f"or one fold on its own test split with --checkpoint {dirs[0]}")
    if options["split"] == "auto":
        options["split"] = "all"
    ds, row_split = load_checked(first, options["data"], options["split"], prog)
    options["tta"] = use_tta(options, first.cfg)
    probs, raw_sum, fold_decisions, run, t0 = [], None, [], None, time.perf_counter()
    for d in dirs:
        restored = first if d == dirs[0] else restore(str(d), options["device"])
        if restored.classes != first.classes:
            raise ConfigError(f"{d}: classes {restored.classes} differ from {dirs[0]}'s {first.classes}")
        if run is None or restored.image_size != run.cfg.data.image_size:
            run = checkpoint_run(restored, ds, options["batch_size"], options["loader"], options["amp"])
        run = dataclasses.replace(run, model=restored.model, decision=restored.decision)
        raw = scores(run, "test", options["tta"])
        probs.append(raw.probs)
        fold_decisions.append(restored.decision)
        raw_sum = raw.probs.float() if raw_sum is None else raw_sum + raw.probs.float()
        del restored
    mean = mean_probabilities(probs, fold_decisions)
    labels = raw.labels
    cm = confusion_matrix(labels, mean.argmax(1), mean.shape[1])
    ensemble_run = dataclasses.replace(run, decision=combined_decision(fold_decisions))
    combined = Scores(cm, mean, labels, raw.loader, uncalibrated=raw_sum / len(dirs))
    if len(labels) != len(row_split):  # a loader dropped undecodable files: keep rows aligned
        from engine.score.inference import _kept_rows
        row_split = [row_split[i] for i in _kept_rows(ds.test, raw.loader.split)]
    return Scored(ensemble_run, first, row_split, combined, time.perf_counter() - t0)
