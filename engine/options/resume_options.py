"""Options given together with `--resume RUN`: applied where safe, refused otherwise, never ignored.

A resumed run continues with the run's own settings. An option given on the command line
that differs from them is either

- applied: the ones that change neither the data, the model, the optimizer state nor the
  meaning of a step (`SAFE`): more or fewer `--epochs` (not fewer than already trained),
  patience, logging, progress, tracking, threads, device, loader, evaluation batch, TTA; or
- refused with one line naming each such option, its value in the run and the one given.

A new `--epochs` re-plans the learning-rate schedule from the current step: steps already
taken keep their rates; if the schedule was still warming up (or, one-cycle, ramping up) the
whole schedule is recomputed over the new length, otherwise the rate continues from its
current value and follows a half cosine down to `min_lr_ratio` times the base rate at the new
last step (no jump, no second warmup). Every re-plan is stored in the checkpoint, so a later
resume rebuilds the same table.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from common.cli import split_argv
from common.errors import ConfigError
from engine.options.config import FIELDS, Config, _full_key, set_option
from engine.run.schedules import lr_multipliers

log = logging.getLogger("medtrain.train")

SAFE = frozenset(k for k, f in FIELDS.items() if f.metadata.get("safe_on_resume"))  # opt(safe_on_resume=True)
ALWAYS_THE_RUNS = {"run.resume", "run.out"}  # the run continues in its own folder


def _given(argv: list[str]) -> list[tuple[str, str, str | None]]:
    """(as typed, full key, raw value) of each option on the command line, as parse_args reads them."""
    return [(key, _full_key(key), raw) for key, raw in split_argv(argv)]


def _same(key: str, a, b) -> bool:
    if key == "data.path" and a != b and "synthetic" not in (a, b):
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    return a == b


def resumed_config(argv: list[str], resume_dir: str, saved: dict | None = None) -> Config:
    """The run's saved config with the safe options of `argv` applied; ConfigError otherwise.
    `saved`: the run's checkpoint when the caller has read it already (a resume reads it once)."""
    if saved is None:
        from engine.run import checkpoint
        saved = checkpoint.load(resume_dir)
    cfg = Config.from_dict(saved["config"])
    refused = []
    for typed, full, raw in _given(argv):
        if full in ALWAYS_THE_RUNS or full == "run.preset" and raw == cfg.run.preset:
            if full == "run.out" and raw and not _same("data.path", raw, resume_dir):
                refused.append(f"--{typed} {raw} (the run continues in {resume_dir})")
            continue
        trial = Config.from_dict(cfg.to_dict())
        if full == "run.preset":
            refused.append(f"--{typed} {raw} (the run used {cfg.run.preset or 'no preset'})")
            continue
        set_option(trial, full, "true" if raw is None else raw)  # validates type and bounds
        section, name = full.split(".", 1)
        before, after = getattr(getattr(cfg, section), name), getattr(getattr(trial, section), name)
        if _same(full, before, after):
            continue
        if full not in SAFE:
            refused.append(f"--{typed} {after} (the run has {before})")
            continue
        if full == "train.epochs":
            _check_epochs(saved["state"], after, resume_dir)
        setattr(getattr(cfg, section), name, after)
    if refused:
        raise ConfigError(f"--resume {resume_dir}: cannot change {'; '.join(refused)} in a running run "
                          "(data, model, optimizer and schedule depend on it); start a new run with another --out")
    cfg.run.resume = resume_dir
    return cfg


def _check_epochs(state: dict, epochs: int, resume_dir: str) -> None:
    done = state["epoch"] + (1 if state["step"] else 0)
    if epochs < done:
        raise ConfigError(f"--resume {resume_dir}: --epochs {epochs} is fewer than the {done} epoch(s) this run has "
                          "already trained")


def continued(saved: dict, cfg: Config) -> Config:
    """The config a resumed run uses: `cfg` when it differs from the saved one only in SAFE
    options (what `resolve` produces), else ConfigError naming the differences."""
    base = Config.from_dict(saved["config"]).to_dict()
    given = cfg.to_dict()
    unsafe = [f"{s}.{k}" for s, values in base.items() for k, v in values.items()
              if f"{s}.{k}" not in SAFE | ALWAYS_THE_RUNS and not _same(f"{s}.{k}", v, given[s][k])]
    if unsafe:
        raise ConfigError(f"--resume {cfg.run.resume}: the config differs from the run's in {', '.join(unsafe)}; "
                          "build it with engine.options.resume_options.resumed_config")
    return cfg


# ----------------------------------------------------------------------------- schedule

def schedule_plan(saved: dict | None, cfg: Config) -> dict:
    """{"epochs0": planned epochs, "extensions": [[epochs, from_step], ...]} for this run."""
    if saved is None:
        return {"epochs0": cfg.train.epochs, "extensions": []}
    plan = saved.get("schedule") or {"epochs0": saved["config"]["train"]["epochs"], "extensions": []}
    plan = {"epochs0": plan["epochs0"], "extensions": [list(e) for e in plan["extensions"]]}
    last = plan["extensions"][-1][0] if plan["extensions"] else plan["epochs0"]
    if cfg.train.epochs != last:
        step = int(saved["state"]["trainer"]["step_counter"])
        plan["extensions"].append([cfg.train.epochs, step])
    return plan


def multipliers(plan: dict, schedule_cfg, steps_per_epoch: int) -> torch.Tensor:
    """The learning-rate multiplier table of a (re-planned) run, one entry per step (+1)."""
    table = lr_multipliers(schedule_cfg, steps_per_epoch, plan["epochs0"])
    for epochs, step in plan["extensions"]:
        table = _extend(table, schedule_cfg, steps_per_epoch, epochs, step)
    return table


def _extend(table: torch.Tensor, schedule_cfg, steps_per_epoch: int, epochs: int, step: int) -> torch.Tensor:
    fresh = lr_multipliers(schedule_cfg, steps_per_epoch, epochs)
    total = len(fresh) - 1
    decaying_from = _decay_start(schedule_cfg, steps_per_epoch, len(table) - 1)
    if schedule_cfg.name not in ("cosine", "onecycle") or step <= decaying_from:
        out = fresh  # flat schedules, or no decay yet: the whole schedule over the new length
    else:
        out = fresh.clone()
        current = float(table[min(step, len(table) - 1)])
        lo = schedule_cfg.min_lr_ratio
        t = torch.arange(step, total + 1, dtype=torch.float64)
        progress = ((t - step) / max(1, total - step)).clamp(0, 1)
        out[step:] = (lo + (current - lo) * 0.5 * (1 + torch.cos(math.pi * progress))).to(out.dtype)
    keep = min(step, len(table), len(out))
    out[:keep] = table[:keep]  # steps already taken keep the rates they had
    return out


def _decay_start(schedule_cfg, steps_per_epoch: int, total: int) -> int:
    if schedule_cfg.name == "onecycle":
        return max(1, int(0.3 * total))
    return min(int(schedule_cfg.warmup_epochs * steps_per_epoch), total - 1)


def apply_plan(trainer, plan: dict, cfg: Config, steps_per_epoch: int) -> None:
    """Rebuild the trainer's tables for a re-planned schedule (before the first step: nothing
    is captured yet) and say what changed in the log."""
    if not plan["extensions"]:
        return
    table = multipliers(plan, cfg.schedule, steps_per_epoch)
    trainer.lr_table = (table * trainer.base_lr).to(trainer.device)  # the EMA table already has the new length
    epochs, step = plan["extensions"][-1]
    if step == int(trainer.step_counter):  # re-planned by this resume (not an earlier one)
        rate = float(table[min(step, len(table) - 1)]) * trainer.base_lr
        log.info("--epochs %d (was %d): %s schedule re-planned from step %d: learning rate %.3g now, %.3g at the "
                 "last step %d", epochs, (plan["extensions"][-2][0] if len(plan["extensions"]) > 1 else plan["epochs0"]),
                 cfg.schedule.name, step, rate, float(table[-2]) * trainer.base_lr, len(table) - 2)
