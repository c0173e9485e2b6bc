"""Command-line mistakes: exit status 2 and exactly one line on stderr, before any training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.options.config import ConfigError
from loaders.datasets import load_dataset

from . import broken, cli_in_process

CASES = {
    "batch size 0": (["--batch-size", "0"], "error: --data.batch_size must be >= 1; got 0"),
    "negative batch size": (["--batch-size", "-8"], "error: --data.batch_size must be >= 1; got -8"),
    "negative lr": (["--lr", "-0.1"], "error: --optim.lr must be in (0.0, 10.0]; got -0.1"),
    "nan lr": (["--lr", "nan"], "error: --optim.lr must be a finite number; got nan"),
    "unknown preset": (["--preset", "smok"],
                       "error: unknown preset 'smok'; known: dermamnist, ham10000, smoke (did you mean smoke?)"),
    "unknown flag": (["--bacth-size", "8"], "error: unknown option --bacth-size (did you mean --batch-size?)"),
    "unknown section key": (["--optim.learning_rate", "0.1"], "error: unknown option --optim.learning_rate"),
    "wrong type int": (["--epochs", "two"], "error: --train.epochs expects int, got 'two'"),
    "wrong type float": (["--lr", "fast"], "error: --optim.lr expects float, got 'fast'"),
    "wrong type bool": (["--data.vflip", "maybe"], "error: --data.vflip expects bool, got 'maybe'"),
    "missing value": (["--epochs"], "error: --epochs needs a value"),
    "positional argument": (["data.npz"], "error: unexpected argument 'data.npz': options look like --key value"),
    "unknown loader": (["--loader", "turbo"], "error: --data.loader must be one of auto, plain, tensor, dali, ffcv, "
                                              "nvjpeg, baseline; got 'turbo'"),
    "image size too small": (["--image-size", "3"],
                             "error: --data.image_size must be 0 (the dataset's own size) or at least 8; got 3"),
    "fractions leave no train": (["--data.val_fraction", "0.5", "--data.test_fraction", "0.5"],
                                 "error: --data.val_fraction 0.5 + --data.test_fraction 0.5 leave nothing for "
                                 "training; keep their sum below 1"),
}


# A real `python -m` process each (a tenth of a second: refused before torch loads), so the
# whole stderr of the process is checked, import-time output included.
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_is_one_line_and_status_2(case, tmp_path):
    args, expected = CASES[case]
    result = broken.run_cli([*args, "--out", tmp_path / "run"], timeout=60)
    line = broken.error_line(result)
    assert result.stderr.strip() == line  # nothing else: no log lines, no traceback
    assert line.startswith(expected), line
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_cuda_requested_without_a_gpu(tmp_path, capfd):
    line = broken.error_line(cli_in_process.run_cli(capfd, ["--device", "cuda", "--out", tmp_path / "run"]))
    assert line == "error: --device cuda: no CUDA GPU is visible here; use --device auto or cpu"


def test_split_leaving_no_training_images(tmp_path):
    # One lesion per class with 60% of the data held out: rounding deals every lesion away.
    root = tmp_path / "few"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(4):
        (root / "images" / f"{i}.jpg").write_bytes(broken.jpeg())
        rows.append([f"images/{i}.jpg", "ab"[i % 2], f"lesion{i % 2}"])
    broken.write_csv(root / "labels.csv", rows)
    with pytest.raises(ConfigError, match=r"few: the split left no training images \(\d+ val, \d+ test\); lower "
                                          r"--data\.val_fraction/--data\.test_fraction or add images"):
        load_dataset(broken.data_cfg(root, val_fraction=0.3, test_fraction=0.3))


def test_out_path_that_is_a_file(tmp_path, capfd):
    (tmp_path / "taken").write_text("not a folder")
    data = broken.good_folder(tmp_path / "data", n=12, classes=("a", "b"))
    line = broken.error_line(cli_in_process.run_cli(capfd, broken.fast_run_args(data, tmp_path / "taken")), status=1)
    assert line == f"error: could not write {tmp_path / 'taken'} (a file is there, not a folder); choose another --out"
