"""Experiment tracking with wandb: config, per-epoch metrics, final metrics, report images.

Offline by default (files under `RUN_DIR/wandb`, `wandb sync` uploads them later), so no
network is ever needed. The `WANDB_MODE` environment variable can only make tracking
stricter (online -> offline -> disabled), never looser, so CI and tests set it to
`disabled` once. Without wandb installed, or if it fails to start, the run goes on
untracked with one warning: tracking must never cost a training run. A full disk or a
read-only run folder is different: the run could not finish either, so it ends at once
with one error line (engine/output/tracking_guard.py).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from pathlib import Path

from engine.output import tracking_guard

log = logging.getLogger("medtrain.tracking")

STRICTNESS = ("online", "offline", "disabled")


def effective_mode(configured: str) -> str:
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("dryrun",):
        env = "offline"
    modes = [m for m in (configured, env) if m in STRICTNESS]
    return max(modes, key=STRICTNESS.index) if modes else "offline"


def summary_of(metrics: dict) -> dict:
    """What a run's wandb summary holds: every scalar of metrics.json under its own key (figures,
    intervals, calibration: `*.ece`, `*.ece_uncalibrated`, `*.temperature`, `calibration.note`;
    `tta`, `ensemble_folds`; notes; flags), so wandb and engine.compare read the same figures.
    Left out: nulls (not computable, engine/score/metric_validity.py) and lists or tables (classes,
    confusion matrices, versions), which stay in metrics.json."""
    return {k: v for k, v in metrics.items() if isinstance(v, (bool, int, float, str))}


class Tracker:
    """No-op unless wandb is installed and the mode allows it; every call is safe either way."""

    def __init__(self, run=None, where: str | Path = "."):
        self.run = run
        self.where = Path(where)  # the wandb folder, named when a write there fails

    @property
    def active(self) -> bool:
        return self.run is not None

    def log_epoch(self, row: dict) -> None:
        if self.run is not None:
            numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            with self._abandon_on_failure():
                self.run.log(numbers, step=int(row.get("epoch", 0)))

    def finish(self, metrics: dict, report_dir: Path | None = None) -> None:
        if self.run is None:
            return
        import wandb
        with self._abandon_on_failure():
            for key, value in summary_of(metrics).items():
                self.run.summary[key] = value
            if report_dir is not None and Path(report_dir).is_dir():
                images = {f"report/{p.stem}": wandb.Image(str(p)) for p in sorted(Path(report_dir).glob("*.png"))}
                if images:
                    self.run.log(images)
            self.run.finish()
        self.run = None

    @contextlib.contextmanager
    def _abandon_on_failure(self):
        """A failed write ends tracking (quietly) and is raised as one WriteError line."""
        try:
            with tracking_guard.quiet_failures(self.where):
                yield
        except OSError:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)
            except Exception:  # already failing for a reason the error line gives
                pass
            raise


def start_tracker(config: dict, run_dir: str | Path, mode: str, project: str = "medtrain") -> Tracker:
    mode = effective_mode(mode)
    if mode == "disabled":
        return Tracker()
    if importlib.util.find_spec("wandb") is None:
        log.warning("wandb is not installed: tracking off (pip install wandb, or --wandb disabled to silence this)")
        return Tracker()
    folder = tracking_guard.preflight(run_dir)  # full disk or read-only: WriteError, one line
    try:
        import wandb
        with tracking_guard.quiet_failures(folder):
            run = wandb.init(project=project, dir=str(run_dir), name=Path(run_dir).name, config=config,
                             mode=mode, reinit="finish_previous")
    except Exception as exc:  # wandb raises many kinds (network, auth, service); all mean "untracked"
        log.warning("wandb did not start (%s: %s): tracking off for this run", type(exc).__name__, str(exc)[:200])
        return Tracker()
    log.info("wandb %s run in %s", mode, folder)
    return Tracker(run, folder)
