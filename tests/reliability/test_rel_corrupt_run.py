"""Acceptance: `python -m engine.train --data DIR` on a folder where 10% of the JPEGs are
corrupt trains on the rest and reports exactly how many were skipped and why."""
from __future__ import annotations

import json

from . import broken, cli_in_process


def test_ten_percent_corrupt_trains_on_the_rest_and_says_what_was_skipped(tmp_path, capfd):
    data = broken.good_folder(tmp_path / "data", n=60, classes=("a", "b", "c"))
    corrupt = {  # 6 of 60: refused by the pre-training check, or failing only at decode
        "im003.jpg": ("truncated", "truncated JPEG (no end-of-image marker)"),
        "im017.jpg": ("truncated", "truncated JPEG (no end-of-image marker)"),
        "im029.jpg": ("truncated", "truncated JPEG (no end-of-image marker)"),
        "im031.jpg": ("empty", "empty file (0 bytes)"),
        "im044.jpg": ("empty", "empty file (0 bytes)"),
        "im058.jpg": ("no pixels", "decode failed: OSError: image file is truncated (0 bytes not processed)"),
    }
    for name, (kind, _) in corrupt.items():
        path = data / "images" / name
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        elif kind == "empty":
            path.write_bytes(b"")
        else:  # a valid header with no image data behind it: passes the cheap check
            path.write_bytes(broken.png_claiming_size(32, 32))
    out = tmp_path / "run"
    # in-process: stdout and stderr taken at the file descriptors, the forked loader worker's lines included
    result = cli_in_process.run_cli(capfd, broken.fast_run_args(data, out) + ["--epochs", "2"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]

    summary = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    assert summary == [f"skipped 6 input(s): 3 truncated JPEG (no end-of-image marker); 2 empty file (0 bytes); "
                       f"1 decode failed: OSError: image file is truncated (0 bytes not processed) "
                       f"(each listed in {out}/data_skipped.json)"]
    listed = {entry["path"].rsplit("/", 1)[-1]: entry["reason"]
              for entry in json.loads((out / "data_skipped.json").read_text())}
    assert listed == {name: reason for name, (_, reason) in corrupt.items()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data.skipped"] == 6 and metrics["epochs"] == 2
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(row["train.loss"] == row["train.loss"] for row in history)  # trained, finite
    # Each bad file is reported once, however many epochs and loaders saw it.
    for name in corrupt:
        assert result.stderr.count(f"{name}:") <= 1, result.stderr
