"""What `engine.evaluate` and `engine.predict` share: their options, and one pass that restores
the checkpoint (engine/run/restore.py), reads the data checked against its classes and scores the
requested rows (engine/score/evaluation.py, with TTA when asked: engine/score/tta.py)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_main, suggest
from common.options import like, opt, parse, usage
from engine.score import data_scope, ensemble
from common import run_lock
from engine.run.build import Run
from engine.options.config import CHECKPOINT_NAME, TrainConfig
from engine.run.env import setup_logging
from engine.score.evaluation import Scores, scores
from engine.run.restore import Restored, checkpoint_run, load_checked, restore

SPLITS = ("test", "val", "train", "all", "auto")  # auto: the test split of the run's own data, else all


@dataclass
class ScoreOptions:
    """The options engine.evaluate and engine.predict share (each overrides split and out)."""
    checkpoint: str = opt("", path=True, required=True, help="the trained run: its folder or its checkpoint.pt")
    data: str = opt("", path=True, required=True, help="the data to score (same classes as the run's)")
    out: str = opt("", path=True, help="where the results go")
    tta: bool = opt(False, help="test-time augmentation (engine/score/tta.py); default: as the run was trained")
    no_tta: bool = opt(False, help="no test-time augmentation, even where the run used it")
    split: str = opt("auto", choices=SPLITS, help="rows scored; auto = the run's test split of its own data, "
                                                  "else every image")
    device: str = like(TrainConfig, "device", help="where to score")
    batch_size: int = opt(0, ge=0, help="images per batch; 0 = the run's evaluation batch")
    loader: str = opt("auto", help="the input pipeline (as --data.loader of engine.train)")
    amp: bool = opt(False, help="mixed precision (autocast) while scoring")


def options_of(argv: list[str], cls, prog: str) -> dict:
    """The declared options of `cls` as a dict, --checkpoint as a run folder or its file."""
    options = dataclasses.asdict(parse(argv, cls, prog, suggest)[0])
    ckpt = Path(options["checkpoint"])
    if ckpt.name == CHECKPOINT_NAME:
        options["checkpoint"] = str(ckpt.parent)
    return options


def cli_main(argv: list[str] | None, doc: str, cls, prog: str, action) -> int:
    """The `main` of engine.evaluate and engine.predict."""
    def act(args: list[str]) -> None:
        options = options_of(args, cls, prog)
        setup_logging()
        with run_lock.scope():  # an output folder this command locked is released when it ends
            action(options)
    return run_main(act, argv, lambda: usage(prog, doc.strip().split("\n\n", 1)[1], cls))


@dataclass
class Scored:
    run: Run
    restored: Restored
    row_split: list[str]          # the split each scored row came from
    scores: Scores
    seconds: float


def score_checkpoint(options: dict, prog: str = "engine.predict") -> Scored:
    """Everything both CLIs do: restore, load, check, score (with TTA when asked, else as the
    run was trained: engine/score/ensemble.py `use_tta`); a cv folder scores all its folds."""
    if ensemble.is_cv_folder(options["checkpoint"]):
        return ensemble.score_ensemble(options, prog)
    restored = restore(options["checkpoint"], options["device"])
    asked = options["split"]
    options["tta"] = ensemble.use_tta(options, restored.cfg)
    if options["split"] == "auto":
        options["split"] = data_scope.default_split(restored, options["data"])
    ds, row_split = load_checked(restored, options["data"], options["split"], prog)
    if prog == "engine.evaluate":  # figures: never on images the model trained or was selected on
        ds, row_split = data_scope.without_seen(restored, ds, row_split, asked, options["data"])
    run = checkpoint_run(restored, ds, options["batch_size"], options["loader"], options["amp"])
    t0 = time.perf_counter()
    raw = scores(run, "test", options["tta"])
    seconds = time.perf_counter() - t0
    if len(raw.labels) != len(row_split):  # the loader dropped undecodable files: keep rows aligned
        row_split = [row_split[i] for i in _kept_rows(ds.test, raw.loader.split)]
    return Scored(run, restored, row_split, raw, seconds)


def _kept_rows(requested, kept) -> list[int]:
    position = {f: i for i, f in enumerate(requested.files)}
    return [position[f] for f in kept.files]


def relative_name(path: str, root: str) -> str:
    """A file's path relative to the data folder; an HDF5 store member's key (ISIC's isic_id)."""
    if "::" in path and path.split("::", 1)[0].lower().endswith((".hdf5", ".h5", ".he5")):
        return path.split("::", 1)[1]
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path
