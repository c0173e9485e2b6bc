"""checkpoint.pt is read once per resume and written once per epoch: the last write, at the end,
already holds the decision (no write, read back and rewrite)."""
from __future__ import annotations

from pathlib import Path

import torch

from engine.run import checkpoint
from engine.train import main
from engine_testkit import FAST
from tests.helpers import skip_report


def _count_io(monkeypatch) -> dict:
    counts = {"loads": 0, "saves": []}
    real_load, real_save = torch.load, checkpoint.save

    def load(f, *args, **kwargs):
        if isinstance(f, (str, Path)) and Path(f).name == checkpoint.NAME:
            counts["loads"] += 1
        return real_load(f, *args, **kwargs)

    def save(run_dir, payload):
        counts["saves"].append(sorted(payload))
        return real_save(run_dir, payload)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(checkpoint, "save", save)
    return counts


def test_a_run_writes_its_checkpoint_once_per_epoch_and_a_resume_reads_it_once(tmp_path, monkeypatch):
    skip_report(monkeypatch)
    out = tmp_path / "run"
    counts = _count_io(monkeypatch)
    assert main(FAST + ["--epochs", "2", "--run.plan", "off", "--out", str(out)]) == 0
    assert counts["loads"] == 0
    assert len(counts["saves"]) == 2 and "decision" in counts["saves"][-1]  # epoch 1; epoch 2 with the decision
    counts = _count_io(monkeypatch)
    assert main(["--resume", str(out), "--epochs", "3"]) == 0
    assert counts["loads"] == 1, counts
    assert len(counts["saves"]) == 1 and "decision" in counts["saves"][0]
    saved = checkpoint.load(out)
    assert saved["state"]["epoch"] == 3 and saved["decision"] is not None
