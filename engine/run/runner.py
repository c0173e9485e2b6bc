"""One training run: `train(cfg)` = `fit(build(cfg))`: epochs, selection, test, outputs.

Host work happens only at log intervals and epoch ends; the step itself lives in loop.py.
SIGTERM/SIGINT set a flag checked at the next step boundary, where the full state is
saved atomically and the run exits cleanly; `--resume DIR` continues from that position.
"""
from __future__ import annotations

import copy
import logging
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from common.constants import BOOTSTRAP_RESAMPLES
from engine.run import checkpoint, distributed
from common import data_identity, run_lock
from engine.score import decisions, metric_validity, multilabel_metrics
from engine.output import run_report, saliency
from engine.options import resume_options
from common.atomic import read_jsonl
from engine.run.build import Run, build
from engine.options.config import Config, ConfigError
from engine.run.env import device_name, setup_logging, versions
from engine.score.evaluation import evaluate, scores, summarized
from engine.run.memory import peak_memory, release_freed_host_memory
from engine.output.progress import progress
from loaders import split_audit
from loaders.datasets import skip_summary
from loaders.multilabel import positive_counts

log = logging.getLogger("medtrain.train")


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop saves and exits at the next step boundary."""

    def __init__(self):
        self.signal = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.signal = signal.Signals(signum).name


@dataclass
class Progress:
    """Where training stands; saved in the checkpoint, restored by --resume."""
    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": -1})
    bad_epochs: int = 0
    best_weights: dict | None = None
    train_seconds: float = 0.0
    images_seen: int = 0
    data_identity: dict = field(default_factory=dict)  # what the run trains on; a resume on other data is refused
    data_contents: dict = field(default_factory=dict)  # content digest -> split: evaluate knows its own images
    schedule: dict = field(default_factory=dict)       # the learning-rate plan, re-planned by --resume --epochs
    checkpoint: dict | None = None  # the last epoch end's, written once by _finish with the decision


def _out_dir(cfg: Config) -> Path:
    if cfg.run.resume:
        return Path(cfg.run.resume)
    return Path(cfg.run.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")


def _split_counts(ds) -> dict[str, list[int]]:
    if ds.multilabel:  # positives per finding
        return {part: positive_counts(ds.split(part).labels).tolist() for part in ("train", "val", "test")}
    return {part: np.bincount(ds.split(part).labels, minlength=ds.num_classes).tolist() for part in ("train", "val", "test")}


def _class_histogram(loader, num_classes: int) -> list[int]:
    order, real = loader.epoch_order()
    drawn = loader.labels[order[:real]]
    if drawn.ndim == 2:  # findings: positives of each among the drawn rows
        counts = (drawn > 0.5).sum(0).cpu().tolist()
    else:
        counts = torch.bincount(drawn, minlength=num_classes).cpu().tolist()
    return distributed.sum_counts(counts, loader.device)


def train(cfg: Config, dataset=None, explicit: frozenset[str] | None = None,
          saved: dict | None = None) -> dict | None:
    """One run; under torchrun one rank of it (a failed peer becomes `distributed.PeerLost`).
    `explicit`: the options the user gave (engine.options.config.Parsed); the plan chooses the others.
    `saved`: --resume's checkpoint when the caller has read it already (read once per resume)."""
    run = None
    with distributed.guard(), run_lock.scope():  # the --out lock (engine/run/build.py) is released when the run ends
        try:
            setup_logging()
            cfg, saved = _resume_config(cfg, saved)
            if saved is None and cfg.run.out and os.environ.get("RANK", "0") == "0":
                _refuse_used_out(Path(cfg.run.out))
            run = build(cfg, dataset, out=str(_out_dir(cfg)), plan=explicit)
            return fit(run, saved)
        except torch.OutOfMemoryError as exc:  # advice in the resolved sizes when the run got built
            raise ConfigError(_out_of_memory_advice(run.cfg if run else cfg, exc)) from None


def _refuse_used_out(out: Path) -> None:
    """A new run into a finished run's folder would leave the two mixed (its data_skipped.json, report
    and evaluations beside new metrics): training further is --resume's job. A stopped or killed run's
    folder (a checkpoint, no metrics) stays free for a new start."""
    if not run_lock.try_acquire(out):
        return  # a run is writing there now: build() refuses with the holder's name
    if (out / "metrics.json").exists():
        raise ConfigError(f"--out {out} holds a finished run (metrics.json); train it further with --resume {out} "
                          "--epochs N (more epochs than it has), or choose another --out for a new run")


def _resume_config(cfg: Config, saved: dict | None) -> tuple[Config, dict | None]:
    """--resume: the run continues with its own settings, in the folder it was resumed from."""
    if not cfg.run.resume:
        return cfg, None
    saved = saved if saved is not None else checkpoint.load(cfg.run.resume)
    return resume_options.continued(saved, cfg), saved  # plus the safe options given (engine.train resolves them)


def _out_of_memory_advice(cfg: Config, exc: BaseException) -> str:
    """One line naming the batch size to try; the checkpoint of the last finished epoch is kept."""
    in_eval = any(frame.name == "evaluate" for frame in traceback.extract_tb(exc.__traceback__))
    size = (cfg.data.eval_batch_size or cfg.data.batch_size) if in_eval else cfg.data.batch_size
    where = "evaluating" if in_eval else "training"
    if size <= 1:
        return (f"out of device memory {where} {cfg.model.name} at batch size 1, {cfg.data.image_size} px; "
                "try a smaller --image-size or --model")
    flag = "--data.eval_batch_size" if in_eval else "--batch-size"
    amp = "" if cfg.train.amp or in_eval else " (or add --amp)"
    return (f"out of device memory {where} {cfg.model.name} at batch size {size}, {cfg.data.image_size} px; "
            f"try {flag} {size // 2}{amp}")


def fit(run: Run, saved: dict | None = None) -> dict | None:
    """Train a built run (from `saved`'s position on --resume); None when stopped by a signal."""
    cfg, ds, writer = run.cfg, run.dataset, run.writer
    identity = data_identity.of(ds)
    if saved is not None:  # a resume on other images would re-draw the split: refused before anything is written
        data_identity.check_same(saved.get("data_identity"), identity, f"--resume {run.out}")
    resolved = cfg.to_dict() | {"resolved": {"loader": run.loader_name, "loader_reason": run.loader_reason,
                                             "device": str(run.device), "classes": ds.classes,
                                             "native_size": ds.native_size}}
    writer.json("config.json", resolved)
    writer.start_tracking(resolved, cfg.wandb.mode, cfg.wandb.project)
    if ds.skipped:
        writer.skipped(ds.skipped)
    for line in _split_warnings(run):  # before training: what the split can and cannot mean
        log.warning("%s", line)
    state = _start(run, saved)
    state.data_identity, state.schedule = identity, resume_options.schedule_plan(saved, cfg)
    state.data_contents = data_identity.contents(ds) if writer.is_main else {}
    if saved is not None:
        resume_options.apply_plan(run.trainer, state.schedule, cfg, run.loaders["train"].steps)  # a changed --epochs
    distributed.seed_rank_rng(cfg.train.seed, state.epoch, state.step)
    stop = StopFlag()
    stop.install()
    wall0 = time.perf_counter()
    epoch = state.epoch
    for epoch in range(state.epoch, cfg.train.epochs):
        if not _train_epoch(run, state, epoch, stop):
            return None
        release_freed_host_memory()  # the epoch's freed batches and eval buffers: not kept resident
        if cfg.train.patience and state.bad_epochs >= cfg.train.patience:
            log.info("early stopping: no val %s gain for %d epochs", cfg.train.select, state.bad_epochs)
            break
        if epoch + 1 < cfg.train.epochs:  # the last one is written once, by _finish, with the decision
            _write(run, state.checkpoint)
    if state.checkpoint is None:  # resumed with nothing left to train: the state as it was read
        _snapshot(run, state, state.epoch, state.step)
    return _finish(run, state, epoch, wall0)


def _split_warnings(run: Run) -> list[str]:
    return split_audit.audit(run.dataset, run.cfg.data.val_fraction, run.cfg.data.test_fraction)


def _selection(run: Run, state: Progress) -> str:
    if not len(run.dataset.val):
        return "last epoch: no validation images, so no epoch could be selected"
    return f"best val {run.cfg.train.select} (epoch {state.best['epoch'] + 1})"


def _start(run: Run, saved: dict | None) -> Progress:
    state = Progress(best_weights=copy.deepcopy(run.model.state_dict()))
    if saved is None:
        run.writer.replace_history(None)
        return state
    resume = saved["state"]
    run.trainer.load_state_dict(resume["trainer"])
    checkpoint.set_rng_state(resume["rng"], run.device)
    state = Progress(resume["epoch"], resume["step"], resume["best"], resume["bad_epochs"], saved["model"])
    # Rows past the checkpoint (written just before a kill) are dropped.
    run.writer.replace_history([r for r in read_jsonl(run.out / "history.jsonl") if r["epoch"] < state.epoch])
    log.info("resuming %s at epoch %d step %d", run.out, state.epoch, state.step)
    return state


def _save(run: Run, state: Progress, epoch: int, step: int) -> None:
    _write(run, _snapshot(run, state, epoch, step))


def _snapshot(run: Run, state: Progress, epoch: int, step: int) -> dict | None:
    """The checkpoint's contents now (rank 0; None elsewhere), kept as `state.checkpoint`."""
    if not run.writer.is_main:
        return None
    resume = {"trainer": run.trainer.state_dict(), "rng": checkpoint.rng_state(run.device), "epoch": epoch,
              "step": step, "best": state.best, "bad_epochs": state.bad_epochs}
    state.checkpoint = {"model": state.best_weights, "classes": run.dataset.classes, "config": run.cfg.to_dict(),
                        "image_size": run.cfg.data.image_size, "model_name": run.cfg.model.name,
                        "state": resume, "data_identity": state.data_identity, "schedule": state.schedule,
                        "data_contents": state.data_contents}
    return state.checkpoint


def _write(run: Run, payload: dict | None) -> None:
    if payload is not None and run.writer.is_main:
        checkpoint.save(run.out, payload)


def _train_epoch(run: Run, state: Progress, epoch: int, stop: StopFlag) -> bool:
    """One epoch and its validation; False when a stop signal ended it (state saved)."""
    cfg, trainer, loader = run.cfg, run.trainer, run.loaders["train"]
    loader.set_epoch(epoch, state.step)
    if state.step == 0:
        trainer.reset_accumulators()
    t0 = time.perf_counter()
    bar = progress(total=loader.steps, initial=state.step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   mode=cfg.train.progress if run.writer.is_main else "off")
    for step, (images, labels, *meta) in enumerate(loader, start=state.step):
        trainer.train_step(images, labels, *meta)
        bar.update(1)
        if (step + 1) % cfg.train.log_interval == 0:
            _log_interval(run, state, bar, epoch, step)
        if distributed.stop_requested(stop.signal, step + 1, cfg.train.log_interval, run.device,
                                      epoch_end=step + 1 == loader.steps):
            _save(run, state, epoch, step + 1)
            bar.close()
            log.warning("%s received: state saved to %s at epoch %d step %d; continue with --resume %s",
                        stop.signal or "a peer's stop signal", run.out / checkpoint.NAME, epoch, step + 1, run.out)
            return False
    bar.close()
    state.step = 0
    stats = trainer.read_accumulators(all_ranks=True)  # sync point: epoch end (summed over ranks)
    if stats["nonfinite"]:
        log.warning("epoch %d: %d non-finite losses skipped", epoch + 1, stats["nonfinite"])
    if stats["nonfinite_streak"] >= cfg.train.max_nonfinite:
        _save(run, state, epoch + 1, 0)
        raise ConfigError(f"stopping: {stats['nonfinite_streak']} non-finite losses in a row; lower --lr")
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    state.images_seen += stats["seen"]
    _validate(run, state, epoch, stats, seconds)
    _snapshot(run, state, epoch + 1, 0)  # written by fit, or by _finish after the last epoch
    return True


def _log_interval(run: Run, state: Progress, bar, epoch: int, step: int) -> None:
    cfg = run.cfg
    stats = run.trainer.read_accumulators()  # sync point: the log interval
    bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.3f}")
    if stats["nonfinite_streak"]:  # reported while it happens, not only at epoch end
        log.warning("epoch %d step %d: %d non-finite losses skipped this epoch, %d in a row (stop at %d)",
                    epoch + 1, step + 1, stats["nonfinite"], stats["nonfinite_streak"], cfg.train.max_nonfinite)
    if distributed.any_rank(stats["nonfinite_streak"] >= cfg.train.max_nonfinite, run.device):
        _save(run, state, epoch, step + 1)
        raise ConfigError(f"stopping: {stats['nonfinite_streak']} non-finite losses in a row at epoch "
                          f"{epoch + 1} step {step + 1}; lower --lr or use --optim.clip_grad")


def _validate(run: Run, state: Progress, epoch: int, stats: dict, seconds: float) -> None:
    """Validation of the epoch's weights (EMA when on), the history row, the selection."""
    cfg, trainer = run.cfg, run.trainer
    distributed.average_buffers(trainer.model)  # one BatchNorm state on every rank before eval
    ema_model = None
    if trainer.ema is not None:
        ema_model = copy.deepcopy(trainer.model)
        ema_model.load_state_dict(trainer.ema_state_dict())
        distributed.average_buffers(ema_model)
    val = evaluate(run, "val", model=ema_model).metrics
    no_val = not len(run.dataset.val)  # nothing to select on: the last epoch is kept, none counts as "worse"
    if trainer.plateau and not no_val:
        trainer.plateau.update(val[cfg.train.select])
    row = {"epoch": epoch, "train.loss": stats["loss"], "train.accuracy": stats["accuracy"],
           "train.balanced_accuracy": stats["balanced_accuracy"],
           "train.nonfinite": stats["nonfinite"], "train.images_per_second": stats["seen"] / seconds,
           "train.class_histogram": _class_histogram(run.loaders["train"], run.dataset.num_classes),
           "lr": float(trainer.optimizer.param_groups[0]["lr"]), "seconds": seconds}
    row |= {f"val.{k}": v for k, v in val.items() if k != "confusion" and "." not in k}
    run.writer.history_row(row)
    log.info("epoch %d: loss %.4f acc %.4f | val acc %.4f bal-acc %.4f auc %.4f | %.0f img/s",
             epoch + 1, stats["loss"], stats["accuracy"], val["accuracy"], val["balanced_accuracy"],
             val["auc_macro"], row["train.images_per_second"])
    if no_val or val[cfg.train.select] > state.best["score"]:
        state.best = {"score": -1.0 if no_val else val[cfg.train.select], "epoch": epoch}
        state.best_weights = copy.deepcopy((ema_model or trainer.model).state_dict())
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1


def _finish(run: Run, state: Progress, epoch: int, wall0: float) -> dict:
    """Test with the selected weights; metrics, predictions and the report (rank 0 writes)."""
    cfg, ds, writer = run.cfg, run.dataset, run.writer
    final_model = copy.deepcopy(run.trainer.model)
    final_model.load_state_dict(state.best_weights)
    val = _decide(run, final_model)
    scored = evaluate(run, "test", cfg.run.tta, final_model, bootstrap=BOOTSTRAP_RESAMPLES)  # with run.decision
    test = scored.metrics
    bad_runtime = {k: v for split in ("train", "val", "test") for k, v in run.loaders[split].bad.items.items()}
    metrics = {f"test.{k}": v for k, v in test.items()} | {f"val.{k}": v for k, v in val.items()}
    metrics |= {
        "train.images_per_second": state.images_seen / max(state.train_seconds, 1e-9),
        "epochs": epoch + 1, "best_epoch": state.best["epoch"] + 1, "wall_seconds": time.perf_counter() - wall0,
        "device": device_name(run.device), "versions": versions(), "loader": run.loader_name, "model": cfg.model.name,
        "image_size": cfg.data.image_size, "classes": ds.classes, "world_size": run.context.world_size,
        "data.skipped": len(ds.skipped) + len(bad_runtime), **peak_memory(run.device),
        "selection": _selection(run, state), "data.warnings": _split_warnings(run),
        "tta": cfg.run.tta,  # the test figures' scoring, as engine.evaluate records it
    }
    if run.decision.get("temperature_note"):  # calibration was asked for and kept T = 1: why
        metrics["calibration.note"] = run.decision["temperature_note"]
    metric_validity.mark(metrics, "test", ds.test.labels, ds.classes)
    metric_validity.mark(metrics, "val", ds.val.labels, ds.classes)
    if not writer.is_main:
        return metrics
    skipped = ds.skipped + sorted(bad_runtime.items())  # refused up front, then failed at decode
    if bad_runtime:
        writer.skipped(skipped)
    writer.json("metrics.json", metrics)
    checkpoint.save(run.out, state.checkpoint | {"decision": run.decision})  # evaluate and predict apply it
    run_report.save_test_outputs(run.out, scored.probs, scored.labels, scored.loader.split, _split_counts(ds),
                              uncalibrated=scored.uncalibrated)
    if cfg.run.report:  # the figures cost seconds; a sweep's folds can draw them later (engine.report)
        saliency.save_sample_or_warn(run.out, final_model, cfg.model.name, run.resolved, run.device, ds, scored)
        run_report.build_or_warn(run.out)
    writer.tracker.finish(metrics, run.out / "report")
    shown = metric_validity.shown
    writer.say(f"test: accuracy {shown(metrics['test.accuracy'])}  balanced_accuracy {shown(metrics['test.balanced_accuracy'])}  "
               f"f1_macro {shown(metrics['test.f1_macro'])}  auc_macro {shown(metrics['test.auc_macro'])}  "
               f"(n={test['n']}, best epoch {state.best['epoch'] + 1}, {metrics['train.images_per_second']:.0f} img/s, "
               f"{metrics['wall_seconds']:.0f}s) -> {run.out}")
    if ds.multilabel:
        writer.say(f"findings ({ds.num_classes}): auc_macro {test['auc_macro']:.4f}  map {test['map']:.4f}  "
                   f"mean per-finding balanced_accuracy {test['balanced_accuracy']:.4f}  exact-match accuracy "
                   f"{test['accuracy']:.4f} (thresholds per finding chosen on val: {run.decision['rule']})")
    if run.decision.get("temperature", 1.0) != 1.0:
        writer.say(f"calibration: temperature {run.decision['temperature']:.3f} (fitted on val); test ECE "
                   f"{test['ece_uncalibrated']:.4f} before, {test['ece']:.4f} after")
    elif run.decision.get("temperature_note"):
        writer.say(f"calibration: {run.decision['temperature_note']}")
    if run.decision["tau"]:
        writer.say(f"prior correction tau {run.decision['tau']:g} (chosen on val for {cfg.train.select}); uncorrected: "
                   f"accuracy {test['uncorrected.accuracy']:.4f}  "
                   f"balanced_accuracy {shown(metrics.get('test.uncorrected.balanced_accuracy'))}")
    for line in metrics["data.warnings"] + [metrics[k] for k in ("test.note", "val.note") if k in metrics]:
        writer.say(f"warning: {line}")
    if skipped:
        writer.say(f"skipped {len(skipped)} input(s): {skip_summary(skipped)} (each listed in {run.out}/data_skipped.json)")
    return metrics


def _decide(run: Run, final_model) -> dict:
    """Prior correction and operating threshold fitted on validation with the kept weights;
    from here on evaluate() applies them (run.decision). Returns the corrected val metrics."""
    raw = scores(run, "val", run.cfg.run.tta, final_model)
    if run.dataset.multilabel:
        run.decision = multilabel_metrics.fit_findings_decision(run.cfg, raw.probs, raw.labels)
        return summarized(run, raw).metrics
    run.decision = decisions.fit_decision(run.cfg, decisions.train_counts(run.dataset), raw.probs, raw.labels)
    return summarized(run, raw).metrics
