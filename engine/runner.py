"""One training run: data, loaders, model, epochs, selection, test, outputs.

Host work happens only at log intervals and epoch ends; the step itself lives in loop.py.
SIGTERM/SIGINT set a flag checked at the next step boundary, where the full state is
saved atomically and the run exits cleanly; `--resume DIR` continues from that position.
"""
from __future__ import annotations

import copy
import json
import logging
import signal
import time
import traceback
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from engine import checkpoint, data_identity, distributed, report, resume_options, run_lock, tracking
from engine.atomic import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl
from engine.config import Config, ConfigError
from engine.env import device_name, seed_everything, setup_logging, versions
from engine.inference import TTA
from engine.loop import Trainer
from engine.metrics import summarize
from engine.progress import progress
from loaders import base as loaders
from loaders.datasets import load_dataset, skip_summary
from loaders.tabular import attach_metadata
from models.metadata import fuse
from models.registry import build_model

log = logging.getLogger("medtrain.train")
BOOTSTRAP_RESAMPLES = 1000  # test-split 95% intervals for balanced accuracy and macro AUC


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


def _out_dir(cfg: Config) -> Path:
    if cfg.run.resume:
        return Path(cfg.run.resume)
    return Path(cfg.run.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")


def _eval_metrics(trainer: Trainer, loader, classes, model=None) -> dict:
    cm, probs, labels = distributed.merge_eval(*trainer.evaluate(loader, model))  # each rank scored its shard
    out = summarize(cm, probs, labels, classes)
    out["confusion"] = cm.cpu().tolist()
    return out


def _split_counts(ds) -> dict[str, list[int]]:
    return {part: np.bincount(ds.split(part).labels, minlength=ds.num_classes).tolist() for part in ("train", "val", "test")}


def _class_histogram(loader, num_classes: int) -> list[int]:
    order, real = loader.epoch_order()
    counts = torch.bincount(loader.labels[order[:real]], minlength=num_classes).cpu().tolist()
    return distributed.sum_counts(counts, loader.device)


def train(cfg: Config, dataset=None) -> dict | None:
    """One run; under torchrun one rank of it (a failed peer becomes `distributed.PeerLost`)."""
    with distributed.guard(), run_lock.scope():  # the --out lock is released when the run ends
        try:
            return _train(cfg, dataset)
        except torch.OutOfMemoryError as exc:
            raise ConfigError(_out_of_memory_advice(cfg, exc)) from None


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


def _train(cfg: Config, dataset=None) -> dict | None:
    setup_logging()
    if cfg.run.resume:
        saved = checkpoint.load(cfg.run.resume)
        resume_state = saved["state"]
        resume_dir = cfg.run.resume
        cfg = resume_options.continued(saved, cfg)  # its own settings, plus the safe options given
        cfg.run.resume = resume_dir  # ...in the folder it was resumed from, even if moved since
    else:
        resume_state = saved = None
    dist_ctx, device = distributed.setup(cfg)  # torchrun: join the group, one device per rank
    is_main = dist_ctx.is_main  # rank 0 alone writes files
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    out = Path(distributed.from_rank0(str(_out_dir(cfg))))  # one folder, even for a timestamped default
    out.mkdir(parents=True, exist_ok=True)
    if is_main:
        run_lock.acquire(out)  # a second run on this folder is refused here, before it writes anything
    cfg.run.out = str(out)
    dist_ctx.run_dir = str(out)

    # -- data ----------------------------------------------------------------------------------
    # engine.cv passes each fold's splits in; everything else reads the data named by the config.
    ds = dataset if dataset is not None else load_dataset(cfg.data, seed=cfg.train.seed)
    identity = data_identity.of(ds)
    if saved is not None:  # a resume on other images would re-draw the split: refused
        data_identity.check_same(saved.get("data_identity"), identity, f"--resume {out}")
    if cfg.model.metadata:  # tabular columns joined on the image id; loaders then yield meta too
        ds, meta_names = attach_metadata(ds, cfg.model.metadata)
        log.info("metadata fusion: %d features from %s", len(meta_names), cfg.model.metadata)
        if cfg.train.cuda_graph:
            raise ConfigError("--model.metadata with --cuda-graph is not supported yet; drop one of them")
    name, why = loaders.resolve(cfg.data.loader, ds, device)
    log.info("dataset %s: %d classes, train/val/test %d/%d/%d, native %dpx; loader %s (%s)",
             ds.name, ds.num_classes, len(ds.train), len(ds.val), len(ds.test), ds.native_size, name, why)
    if cfg.data.image_size == 0:
        cfg.data.image_size = ds.native_size
    sampler = loaders.make_sampler(ds, cfg, device, dist_ctx.rank, dist_ctx.world_size)
    train_loader = loaders.build(name, ds, "train", cfg, device, train=True, sampler=sampler)
    val_loader = loaders.build(name, ds, "val", cfg, device, train=False)
    test_loader = loaders.build(name, ds, "test", cfg, device, train=False)

    # -- model ---------------------------------------------------------------------------------
    model = build_model(cfg.model.name, ds.num_classes, cfg.data.image_size, dropout=cfg.model.dropout,
                        pretrained=cfg.model.pretrained)
    if cfg.model.metadata:
        model = fuse(model, ds.train.meta.shape[1], ds.num_classes, dropout=cfg.model.dropout)
    model = model.to(device)
    model = distributed.convert_sync_bn(model, cfg)
    trainer = Trainer(model, cfg, device, ds.num_classes, train_loader.steps)
    schedule = resume_options.schedule_plan(saved, cfg)
    if cfg.train.amp and trainer.amp_dtype is None:
        log.warning("--amp: bf16 is emulated on this CPU (no AVX512-BF16/AMX) and ~10x slower than fp32, "
                    "so this run trains in fp32; --train.amp_dtype bf16 forces it")
    distributed.attach(trainer, cfg)  # DDP forward; the trainer keeps the bare module for state
    resolved = cfg.to_dict() | {"resolved": {"loader": name, "loader_reason": why, "device": str(device),
                                             "classes": ds.classes, "native_size": ds.native_size}}
    if is_main:
        atomic_write_json(out / "config.json", resolved)
    tracker = tracking.start(resolved, out, cfg.wandb.mode, cfg.wandb.project) if is_main else tracking.Tracker()
    if ds.skipped and is_main:
        atomic_write_json(out / "data_skipped.json", [{"path": p, "reason": r} for p, r in ds.skipped])

    start_epoch, start_step, best, bad_epochs = 0, 0, {"score": -1.0, "epoch": -1}, 0
    best_weights = copy.deepcopy(model.state_dict())
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        resume_options.apply_plan(trainer, schedule, cfg, train_loader.steps)  # a changed --epochs
        checkpoint.set_rng_state(resume_state["rng"], device)
        start_epoch, start_step = resume_state["epoch"], resume_state["step"]
        best, bad_epochs = resume_state["best"], resume_state["bad_epochs"]
        best_weights = saved["model"]
        history = [r for r in read_jsonl(out / "history.jsonl") if r["epoch"] < start_epoch]
        if is_main:
            # Rows past the checkpoint (written just before a kill) are dropped, atomically.
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history).encode()
            atomic_write_bytes(out / "history.jsonl", lambda fh: fh.write(text))
        log.info("resuming %s at epoch %d step %d", out, start_epoch, start_step)
    elif (out / "history.jsonl").exists() and is_main:
        (out / "history.jsonl").unlink()

    distributed.seed_rank_rng(cfg.train.seed, start_epoch, start_step)

    def save(epoch: int, step: int) -> None:
        if not is_main:
            return
        state = {"trainer": trainer.state_dict(), "rng": checkpoint.rng_state(device), "epoch": epoch,
                 "step": step, "best": best, "bad_epochs": bad_epochs}
        checkpoint.save(out, {"model": best_weights, "classes": ds.classes, "config": cfg.to_dict(),
                              "image_size": cfg.data.image_size, "model_name": cfg.model.name, "state": state,
                              "data_identity": identity, "schedule": schedule})

    stop = StopFlag()
    stop.install()
    wall0, train_seconds, images_seen = time.perf_counter(), 0.0, 0
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        train_loader.set_epoch(epoch, start_step)
        if start_step == 0:
            trainer.reset_accumulators()
        t0 = time.perf_counter()
        bar = progress(total=train_loader.steps, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       mode=cfg.train.progress if is_main else "off")
        for step, (images, labels, *meta) in enumerate(train_loader, start=start_step):
            trainer.train_step(images, labels, *meta)
            bar.update(1)
            if (step + 1) % cfg.train.log_interval == 0:
                stats = trainer.read_accumulators()  # sync point: the log interval
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.3f}")
                if stats["nonfinite_streak"]:  # reported while it happens, not only at epoch end
                    log.warning("epoch %d step %d: %d non-finite losses skipped this epoch, %d in a row (stop at %d)",
                                epoch + 1, step + 1, stats["nonfinite"], stats["nonfinite_streak"],
                                cfg.train.max_nonfinite)
                if distributed.any_rank(stats["nonfinite_streak"] >= cfg.train.max_nonfinite, device):
                    save(epoch, step + 1)
                    raise ConfigError(f"stopping: {stats['nonfinite_streak']} non-finite losses in a row at epoch "
                                      f"{epoch + 1} step {step + 1}; lower --lr or use --optim.clip_grad")
            if distributed.stop_requested(stop.signal, step + 1, cfg.train.log_interval, device,
                                          epoch_end=step + 1 == train_loader.steps):
                save(epoch, step + 1)
                bar.close()
                log.warning("%s received: state saved to %s at epoch %d step %d; continue with --resume %s",
                            stop.signal or "a peer's stop signal", out / checkpoint.NAME, epoch, step + 1, out)
                return None
        bar.close()
        start_step = 0
        stats = distributed.global_accumulators(trainer)  # sync point: epoch end (summed over ranks)
        if stats["nonfinite"]:
            log.warning("epoch %d: %d non-finite losses skipped", epoch + 1, stats["nonfinite"])
        if stats["nonfinite_streak"] >= cfg.train.max_nonfinite:
            save(epoch + 1, 0)
            raise ConfigError(f"stopping: {stats['nonfinite_streak']} non-finite losses in a row; lower --lr")
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        images_seen += stats["seen"]

        distributed.average_buffers(trainer.model)  # one BatchNorm state on every rank before eval
        ema_model = None
        if trainer.ema is not None:
            ema_model = copy.deepcopy(trainer.model)
            ema_model.load_state_dict(trainer.ema_state_dict())
            distributed.average_buffers(ema_model)
        val = _eval_metrics(trainer, val_loader, ds.classes, ema_model)
        if trainer.plateau:
            trainer.plateau.update(val[cfg.train.select])
        row = {"epoch": epoch, "train.loss": stats["loss"], "train.accuracy": stats["accuracy"],
               "train.balanced_accuracy": stats["balanced_accuracy"],
               "train.nonfinite": stats["nonfinite"], "train.images_per_second": stats["seen"] / epoch_seconds,
               "train.class_histogram": _class_histogram(train_loader, ds.num_classes),
               "lr": float(trainer.optimizer.param_groups[0]["lr"]), "seconds": epoch_seconds}
        row |= {f"val.{k}": v for k, v in val.items() if k != "confusion" and "." not in k}
        if is_main:
            append_jsonl(out / "history.jsonl", row)
            tracker.log_epoch(row)
        log.info("epoch %d: loss %.4f acc %.4f | val acc %.4f bal-acc %.4f auc %.4f | %.0f img/s",
                 epoch + 1, stats["loss"], stats["accuracy"], val["accuracy"], val["balanced_accuracy"],
                 val["auc_macro"], row["train.images_per_second"])
        if val[cfg.train.select] > best["score"]:
            best = {"score": val[cfg.train.select], "epoch": epoch}
            best_weights = copy.deepcopy((ema_model or trainer.model).state_dict())
            bad_epochs = 0
        else:
            bad_epochs += 1
        save(epoch + 1, 0)
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            log.info("early stopping: no val %s gain for %d epochs", cfg.train.select, bad_epochs)
            break

    # -- test with the selected weights --------------------------------------------------------
    final_model = copy.deepcopy(trainer.model)
    final_model.load_state_dict(best_weights)
    if cfg.run.tta:  # final figures average the 8 flips/rotations (engine/inference.py)
        final_model = TTA(final_model)
    val = _eval_metrics(trainer, val_loader, ds.classes, final_model)
    test_cm, test_probs, test_labels = distributed.merge_eval(*trainer.evaluate(test_loader, final_model))
    test = summarize(test_cm, test_probs, test_labels, ds.classes, bootstrap=BOOTSTRAP_RESAMPLES)
    test["confusion"] = test_cm.cpu().tolist()
    bad_runtime = {**train_loader.bad.items, **val_loader.bad.items, **test_loader.bad.items}
    metrics = {f"test.{k}": v for k, v in test.items()} | {f"val.{k}": v for k, v in val.items()}
    metrics |= {
        "train.images_per_second": images_seen / max(train_seconds, 1e-9),
        "epochs": epoch + 1, "best_epoch": best["epoch"] + 1, "wall_seconds": time.perf_counter() - wall0,
        "device": device_name(device), "versions": versions(), "loader": name, "model": cfg.model.name,
        "image_size": cfg.data.image_size, "classes": ds.classes, "world_size": dist_ctx.world_size,
        "data.skipped": len(ds.skipped) + len(bad_runtime),
    }
    if not is_main:
        return metrics
    skipped = ds.skipped + sorted(bad_runtime.items())  # refused up front, then failed at decode
    if bad_runtime:
        atomic_write_json(out / "data_skipped.json", [{"path": p, "reason": r} for p, r in skipped])
    atomic_write_json(out / "metrics.json", metrics)
    report.save_test_outputs(out, test_probs, test_labels, test_loader.split, _split_counts(ds))
    report.build_or_warn(out)
    tracker.finish(metrics, out / "report")
    print(f"test: accuracy {test['accuracy']:.4f}  balanced_accuracy {test['balanced_accuracy']:.4f}  "
          f"f1_macro {test['f1_macro']:.4f}  auc_macro {test['auc_macro']:.4f}  "
          f"(n={test['n']}, best epoch {best['epoch'] + 1}, {metrics['train.images_per_second']:.0f} img/s, "
          f"{metrics['wall_seconds']:.0f}s) -> {out}")
    if skipped:
        print(f"skipped {len(skipped)} input(s): {skip_summary(skipped)} (each listed in {out}/data_skipped.json)")
    return metrics
