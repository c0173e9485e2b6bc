"""Set-up the tests share, in one place: tiny generated datasets, the seconds-long train options
and one call that trains a run on them. Imported by tests (`from tests.helpers import ...`);
tests/conftest.py keeps the fixtures. tests/engine/engine_testkit.py holds the engine tests'
stop-after-N-steps hooks."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# One epoch, small batches, CPU, nothing sent or drawn live: a run in seconds on 2 shared cores.
TINY = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off"]


def tiny_args(model: str, *extra: str) -> list[str]:
    """TINY for `model`, then `extra` (later options win)."""
    return ["--model", model, *TINY, *extra]


def write_jpegs(root: Path, n: int = 24, size: int = 32, classes=("a", "b", "c"), seed: int = 0,
                groups: bool = True) -> Path:
    """A tiny folder + labels.csv dataset with class-dependent colours."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % len(classes)
        img = np.full((size, size, 3), 40 + 80 * label, np.uint8) + rng.integers(0, 30, (size, size, 3), dtype=np.uint8)
        name = f"images/im{i:03d}.jpg"
        Image.fromarray(img).save(root / name, quality=90)
        rows.append([name, classes[label]] + ([f"g{i // 2}"] if groups else []))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"] + (["group"] if groups else []))
        w.writerows(rows)
    return root


def train(data: Path, out: Path, args: list[str], report: bool = True) -> Path:
    """engine.train on `data` into `out` (asserted to finish); `report=False` skips the PNG
    report (`--run.report false`), which costs more than a tiny run and is not what most tests check."""
    from engine.train import main as train_main
    assert train_main(["--data", str(data), "--out", str(out)] + args + ([] if report else ["--run.report", "false"])) == 0
    return out


def skip_report(monkeypatch) -> None:
    """The report's figures not drawn (run_report.build_or_warn answers as if it had): they cost
    more than a tiny run, and most tests read none. engine.evaluate has no `--run.report` to say so."""
    from engine.output import run_report
    monkeypatch.setattr(run_report, "build_or_warn", lambda run_dir: True)


def skip_figures(monkeypatch) -> None:
    """skip_report, and the Grad-CAM sample its figure is drawn from (a backward pass per image):
    for engine.evaluate in tests that read only its metrics."""
    from engine.output import saliency
    skip_report(monkeypatch)
    monkeypatch.setattr(saliency, "save_sample_or_warn", lambda *args, **kwargs: True)


def step_batch(seed: int, poison: bool = False, batch: int = 8, classes: int = 5, size: int = 16):
    """A seeded channels-last image batch and labels for one train step; `poison` puts one NaN in
    the first image (a non-finite loss the step must skip)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    if poison:
        images[0, 0, 0, 0] = float("nan")
    return images, torch.randint(0, classes, (batch,), generator=g)
