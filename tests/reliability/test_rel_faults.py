"""Faults: kill -9 mid-write, a full disk, running out of device memory. Previous files stay
intact, the error is one line naming the file or the batch size to try."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from common import atomic
from engine.run import checkpoint
from common.atomic import WriteError, atomic_write_json, read_jsonl

from . import broken, cli_in_process

# -- kill -9 in the middle of a write ------------------------------------------------------------

# The child writes the first half of the new file, says so, and waits to be killed.
CHILD = textwrap.dedent("""
    import os, sys, time
    from common import atomic
    real_fdopen = os.fdopen

    class HalfThenHang:
        def __init__(self, fh): self.fh = fh
        def __enter__(self): return self
        def __exit__(self, *exc): return self.fh.__exit__(*exc)
        def fileno(self): return self.fh.fileno()
        def flush(self): self.fh.flush()
        def write(self, data):
            data = bytes(data)
            self.fh.write(data[: len(data) // 2]); self.fh.flush()
            print("mid-write", flush=True)
            time.sleep(300)

    atomic.os.fdopen = lambda fd, mode: HalfThenHang(real_fdopen(fd, mode))
    run_dir, what = sys.argv[1], sys.argv[2]
    if what == "checkpoint":  # torch only here: the metrics child starts in a fraction of the time
        import torch
        from engine.run import checkpoint
        checkpoint.save(run_dir, {"model": {"w": torch.full((200_000,), 2.0)}, "state": {"epoch": 2}})
    else:
        atomic.atomic_write_json(os.path.join(run_dir, "metrics.json"), {"epochs": 2, "pad": "x" * 200_000})
""")


def _kill_mid_write(run_dir: Path, what: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), what], cwd=broken.REPO, env=broken.cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "mid-write", child.stderr.read()
        temps = list(run_dir.glob(".*.tmp"))
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # really mid-way through the new file
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()


def test_kill_9_while_writing_the_checkpoint_keeps_the_previous_one(tmp_path):
    checkpoint.save(tmp_path, {"model": {"w": torch.full((200_000,), 1.0)}, "state": {"epoch": 1}})
    _kill_mid_write(tmp_path, "checkpoint")
    saved = checkpoint.load(tmp_path)  # weights_only load: the whole old file, not a torn mix
    assert saved["state"]["epoch"] == 1 and torch.equal(saved["model"]["w"], torch.full((200_000,), 1.0))
    assert len(list(tmp_path.glob(".checkpoint.pt.*.tmp"))) == 1  # the dead writer's half file...
    checkpoint.save(tmp_path, {"model": {"w": torch.zeros(3)}, "state": {"epoch": 3}})
    assert not list(tmp_path.glob(".*.tmp"))  # ...is cleaned by the next write
    assert checkpoint.load(tmp_path)["state"]["epoch"] == 3


def test_kill_9_while_writing_metrics_keeps_the_previous_json(tmp_path):
    atomic_write_json(tmp_path / "metrics.json", {"epochs": 1})
    _kill_mid_write(tmp_path, "metrics")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"epochs": 1}


def test_torn_history_line_is_dropped_not_misread(tmp_path):
    path = tmp_path / "history.jsonl"
    for epoch in range(3):
        atomic.append_jsonl(path, {"epoch": epoch, "train.loss": 1.0 / (epoch + 1)})
    with open(path, "a") as fh:  # what a kill -9 mid-append leaves
        fh.write('{"epoch": 3, "train.lo')
    assert [row["epoch"] for row in read_jsonl(path)] == [0, 1, 2]


def test_temp_files_of_live_writers_are_left_alone(tmp_path):
    live = tmp_path / f".metrics.json.{os.getppid()}.abc.tmp"  # our parent: alive
    live.write_text("partial")
    atomic_write_json(tmp_path / "metrics.json", {"ok": True})
    assert live.exists()


# -- a full disk ---------------------------------------------------------------------------------

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_on_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"model": {"w": torch.ones(4)}, "state": {"epoch": 1}})
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    with pytest.raises(WriteError) as info:
        checkpoint.save(tmp_path, {"model": {"w": torch.zeros(4)}, "state": {"epoch": 2}})
    monkeypatch.undo()
    assert str(info.value) == (f"could not write {tmp_path / 'checkpoint.pt'} (No space left on device); "
                               "the previous checkpoint.pt is kept")
    assert info.value.errno == errno.ENOSPC
    assert checkpoint.load(tmp_path)["state"]["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))  # no half file eating the little space left


def test_full_disk_on_history_append_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    with pytest.raises(WriteError, match=r"could not append to .*history\.jsonl \(No space left on device\); "
                                         r"nothing was written"):
        atomic.append_jsonl(tmp_path / "history.jsonl", {"epoch": 0})


@contextmanager
def tiny_disk(path: Path, size: str = "1m"):
    """A real filesystem that fills up: tmpfs, where mounting is allowed (root in a container)."""
    path.mkdir()
    try:
        mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                       capture_output=True).returncode == 0
    except (OSError, AttributeError):  # no mount binary, no geteuid
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root); the monkeypatched full-disk tests cover the logic")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_really_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    with tiny_disk(tmp_path / "disk", "256k") as disk:
        checkpoint.save(disk, {"model": {"w": torch.ones(1000)}, "state": {"epoch": 1}})
        with pytest.raises(WriteError, match=r"checkpoint\.pt \(No space left on device\); the previous "
                                             r"checkpoint\.pt is kept"):
            checkpoint.save(disk, {"model": {"w": torch.ones(200_000)}, "state": {"epoch": 2}})
        assert checkpoint.load(disk)["state"]["epoch"] == 1
        assert not list(disk.glob(".*.tmp"))


def test_training_onto_a_full_disk_is_one_line_and_status_1(tmp_path, capfd):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    with tiny_disk(tmp_path / "disk", "1m") as disk:  # config.json fits; the checkpoint (~6 MB) does not
        result = cli_in_process.run_cli(capfd, broken.fast_run_args(data, disk / "run"))
        line = broken.error_line(result, status=1)
        assert line == (f"error: could not write {disk / 'run' / 'checkpoint.pt'} (No space left on device); "
                        "nothing was written")
        assert json.loads((disk / "run" / "config.json").read_text())["data"]["path"] == str(data)


def test_disk_full_mid_run_keeps_the_previous_epochs_checkpoint(tmp_path, monkeypatch, capsys):
    from engine.train import main

    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    real_write = checkpoint.atomic_write_bytes
    calls = []

    def second_write_hits_full_disk(path, write):
        calls.append(path)
        real_write(path, _no_space if len(calls) == 2 else write)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", second_write_hits_full_disk)
    out = tmp_path / "run"
    assert main(broken.fast_run_args(data, out) + ["--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: could not write {out / 'checkpoint.pt'} (No space left on device); the previous checkpoint.pt is kept"]
    assert checkpoint.load(out)["state"]["epoch"] == 1  # epoch 1's checkpoint, whole
    assert len(calls) == 2


# -- out of device memory ------------------------------------------------------------------------

def _oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("phase, extra, expected", [
    ("train", ["--batch-size", "64"],
     "error: out of device memory training mlp at batch size 64, 16 px; try --batch-size 32 (or add --amp)"),
    ("train", ["--batch-size", "64", "--amp"],
     "error: out of device memory training mlp at batch size 64, 16 px; try --batch-size 32"),
    ("train", ["--batch-size", "1"],
     "error: out of device memory training mlp at batch size 1, 16 px; try a smaller --image-size or --model"),
    ("evaluate", ["--data.eval_batch_size", "256"],
     "error: out of device memory evaluating mlp at batch size 256, 16 px; try --data.eval_batch_size 128"),
])
def test_out_of_memory_names_the_batch_size_to_try(tmp_path, monkeypatch, capsys, phase, extra, expected):
    from engine.run import build as build_module
    from engine.train import main

    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    real_build = build_module.build_model_for

    def build_model_that_runs_out(*args, **kwargs):  # the model itself runs out, in one phase only
        model = real_build(*args, **kwargs)

        def hook(module, inputs):
            if module.training == (phase == "train"):
                _oom()

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(build_module, "build_model_for", build_model_that_runs_out)
    assert main(broken.fast_run_args(data, tmp_path / "run") + extra) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [expected]
