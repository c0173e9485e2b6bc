"""`evaluate(run, split, tta)`: one split of a built run scored with the given weights, merged
over DDP ranks, summarized into the metrics every output file uses. Training (validation each
epoch, the final test) and engine.evaluate / engine.predict all score through here, so the
run's decision (prior correction, operating threshold: engine/score/decisions.py; fitted after
training, stored in the checkpoint) is applied in this one place."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.score import decisions, multilabel_metrics
from engine.run import distributed
from engine.score.metrics import summarize
from engine.run.precision import autocast, autocast_dtype
from engine.score.scoring import score
from engine.score.tta import TTA


@dataclass
class Scores:
    cm: torch.Tensor              # confusion matrix of the real rows
    probs: torch.Tensor           # real rows, in split order
    labels: torch.Tensor
    loader: object
    uncalibrated: torch.Tensor | None = None  # an ensemble's mean raw probabilities (probs: calibrated, corrected)


@dataclass
class Evaluation(Scores):
    metrics: dict | None = None   # summarize() keys plus "confusion"
    predictions: torch.Tensor | None = None  # the class each row is assigned (argmax, or the stored threshold)


def scores(run, split: str, tta: bool = False, model: nn.Module | None = None) -> Scores:
    """`model`: weights to score (EMA, selected); default the run's own model. With a trainer
    its evaluation forward is used (compiled once, autocast as trained); without one (a
    restored checkpoint) the model runs eagerly, autocast as engine/run/precision.py rules."""
    loader = run.loaders[split]
    if run.trainer is not None:
        if tta:  # averages the 8 flips/rotations (engine/score/tta.py)
            model = TTA(model if model is not None else run.trainer.model, run_is_multilabel(run))
        cm, probs, labels = distributed.merge_eval(*run.trainer.evaluate(loader, model))  # each rank scored its shard
        return Scores(cm, probs, labels, loader)
    model = model if model is not None else run.model
    model = (TTA(model, run_is_multilabel(run)) if tta else model).eval()
    dtype = autocast_dtype(run.cfg, run.device)  # the training rule, CPU guard included
    return Scores(*score(model, loader, len(run.dataset.classes), lambda: autocast(run.device, dtype), run_is_multilabel(run)),
                  loader)


def run_is_multilabel(run) -> bool:
    """Findings (several per image): the data's labels say so, or for unlabelled rows the checkpoint's decision."""
    return run.dataset.multilabel or (getattr(run, "decision", None) or {}).get("task") == "multilabel"


def summarized(run, raw: Scores, bootstrap: int = 0) -> Evaluation:
    """Metrics of the scores as the run decides: with `run.decision` (after training; a restored
    checkpoint's) the corrected probabilities, their confusion and the uncorrected figures beside them."""
    decision = getattr(run, "decision", None)
    if run_is_multilabel(run):  # per-finding thresholds chosen on validation (0.5 before): engine/score/multilabel_metrics.py
        thresholds = (decision or {}).get("thresholds")
        probs = multilabel_metrics.calibrated_findings(raw.probs, decision)  # per-finding temperatures, then thresholds
        metrics = multilabel_metrics.summarize_findings(probs, raw.labels, run.dataset.classes, thresholds, bootstrap)
        cm = torch.tensor(metrics["confusion"], device=raw.probs.device)
        return Evaluation(cm, probs, raw.labels, raw.loader, metrics=metrics,
                          predictions=multilabel_metrics.decide_findings(probs, thresholds))
    if decision is None:  # during training (validation each epoch), or a checkpoint without one
        metrics = summarize(raw.cm, raw.probs, raw.labels, run.dataset.classes, bootstrap=bootstrap)
        metrics["confusion"] = raw.cm.cpu().tolist()
        return Evaluation(raw.cm, raw.probs, raw.labels, raw.loader, metrics=metrics, predictions=raw.probs.argmax(1))
    metrics = decisions.summarize_decided(decision, raw.probs, raw.labels, run.dataset.classes, bootstrap=bootstrap,
                                          uncalibrated=raw.uncalibrated)
    cm = torch.tensor(metrics["confusion"], device=raw.cm.device)
    return Evaluation(cm, decisions.adjust(raw.probs, decision), raw.labels, raw.loader, metrics=metrics,
                      predictions=decisions.decide(raw.probs, decision),
                      uncalibrated=raw.probs if raw.uncalibrated is None else raw.uncalibrated)


def evaluate(run, split: str, tta: bool = False, model: nn.Module | None = None, bootstrap: int = 0) -> Evaluation:
    return summarized(run, scores(run, split, tta, model), bootstrap)
