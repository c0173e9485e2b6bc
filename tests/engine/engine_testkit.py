"""Shared bits for the engine tests: a seconds-long run configuration and a stop-after-N-steps hook."""
from __future__ import annotations

import json
from pathlib import Path

from engine.run import runner

# Small enough for seconds on 2 CPU cores, big enough for several steps per epoch and a padded
# last evaluation batch (the splits are not multiples of the batch size).
FAST = ["--data", "synthetic", "--data.synthetic_count", "100", "--image-size", "16", "--batch-size", "12",
        "--model", "seedcnn", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
        "--data.workers", "1", "--train.log_interval", "3"]


def record_calibration_batches(monkeypatch) -> list[int]:
    """The plan's calibration gets a pixel MLP (8 px, 3 classes) that appends the batch size of
    every step it times to the returned list: which steps were timed, whatever their speed."""
    from engine.run import build as assembly  # calibration takes its model from the assembly module
    from models.registry import build_model
    batches: list[int] = []

    def recording_model(*args, **kwargs):
        model = build_model("mlp", 3, 8)
        model.register_forward_pre_hook(lambda module, inputs: batches.append(inputs[0].shape[0]))
        return model
    monkeypatch.setattr(assembly, "bare_model", recording_model)
    return batches


def draw_no_pixels(monkeypatch) -> None:
    """The report built as a run builds it (each figure laid out, README.md written) but its PNGs
    left empty: rasterizing them is most of its cost. For tests that read the report's text."""
    from engine.output import plots

    def save(fig, path: Path) -> Path:
        import matplotlib.pyplot as plt  # loaded by the figure being saved (plots imports it at the first)
        plt.close(fig)
        Path(path).write_bytes(b"")
        return path

    monkeypatch.setattr(plots, "_save", save)


def stop_after(monkeypatch, steps: int) -> None:
    """The runner sees SIGTERM after `steps` train steps: a signal at an exact, repeatable point."""

    class StopAfter(runner.StopFlag):
        checks = 0

        @property
        def signal(self):
            StopAfter.checks += 1  # the runner reads the flag once after every step
            return "SIGTERM" if StopAfter.checks >= steps else None

        @signal.setter
        def signal(self, value):
            pass

    monkeypatch.setattr(runner, "StopFlag", StopAfter)


def stop_never(monkeypatch) -> None:
    monkeypatch.setattr(runner, "StopFlag", ORIGINAL_STOP_FLAG)


ORIGINAL_STOP_FLAG = runner.StopFlag


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]


def metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
