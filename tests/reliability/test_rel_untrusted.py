"""Untrusted files: checkpoints and weights load with `weights_only=True`. A pickle that would
run code (here: create a file) is refused with one clear line, and the code never runs."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from engine.run import checkpoint
from engine.options.config import ConfigError

from . import broken, cli_in_process


class CreatesAFile:
    """Unpickling this calls os.system: what a booby-trapped checkpoint from the internet does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _booby_trapped(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.ones(2)}, "payload": CreatesAFile(marker)}, path)
    return path


def test_the_trap_is_real(tmp_path):
    """Control: plain unpickling does run the code, so the refusals below mean something."""
    marker = tmp_path / "pwned"
    path = _booby_trapped(tmp_path / "run" / "checkpoint.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoint_load_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    _booby_trapped(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: refused or unreadable checkpoint \(UnpicklingError: "
                                          r"Weights only load failed"):
        checkpoint.load(tmp_path / "run")
    assert not marker.exists()


def test_resume_from_a_booby_trapped_checkpoint_from_the_cli(tmp_path, capfd):
    marker = tmp_path / "pwned"
    _booby_trapped(tmp_path / "run" / "checkpoint.pt", marker)
    line = broken.error_line(cli_in_process.run_cli(capfd, ["--resume", tmp_path / "run"]))
    assert line.startswith(f"error: {tmp_path / 'run' / 'checkpoint.pt'}: refused or unreadable checkpoint "
                           "(UnpicklingError: Weights only load failed")
    assert not marker.exists()


def test_pretrained_weights_refuse_code(tmp_path):
    from models.registry import build_model

    marker = tmp_path / "pwned"
    path = _booby_trapped(tmp_path / "weights.pt", marker)
    with pytest.raises(ConfigError, match=r"--model\.pretrained .*weights\.pt: not a weights file torch\.load accepts "
                                          r"with weights_only=True \(UnpicklingError\)"):
        build_model("mlp", 2, 16, pretrained=str(path))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / "checkpoint.pt", "wb") as fh:  # not even a torch zip: a bare pickle
        pickle.dump(CreatesAFile(marker), fh)
    with pytest.raises(ConfigError, match=r"refused or unreadable checkpoint \(UnpicklingError"):
        checkpoint.load(tmp_path / "run")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage that is not a checkpoint", "truncated"])
def test_empty_or_truncated_checkpoint_is_a_clear_error(tmp_path, content):
    run = tmp_path / "run"
    checkpoint.save(run, {"model": {"w": torch.ones(50_000)}, "state": {"epoch": 1}})
    path = run / checkpoint.NAME
    path.write_bytes(path.read_bytes()[:5000] if content == "truncated" else content)
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: refused or unreadable checkpoint \(\w+: .+\)"):
        checkpoint.load(run)


def test_missing_checkpoint_names_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere/checkpoint\.pt: no checkpoint here; expected a run folder with "
                                          r"checkpoint\.pt"):
        checkpoint.load(tmp_path / "nowhere" / "checkpoint.pt")


def test_honest_checkpoint_round_trips(tmp_path):
    """The refusals above are not a refusal of everything: a real checkpoint loads."""
    payload = {"model": {"w": torch.arange(5.0)}, "classes": ["a", "b"], "config": {"data": {"path": "x"}},
               "image_size": 16, "model_name": "mlp", "state": {"epoch": 2, "rng": {"torch": torch.get_rng_state()}}}
    checkpoint.save(tmp_path, payload)
    loaded = checkpoint.load(tmp_path)
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"]) and loaded["classes"] == ["a", "b"]
    assert torch.equal(loaded["state"]["rng"]["torch"], payload["state"]["rng"]["torch"])
