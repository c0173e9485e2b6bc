"""The nvjpeg backend on a dataset without JPEGs (PNG X-rays, OCT): no decoder call, no crash.

`decode_jpeg([])` raises ValueError; a batch made only of PNG rows must never reach it. Runs on
the CPU through the same `_decode_batch` the GPU uses (torchvision's CPU decoder there).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.options.config import parse_args
from engine.options.resolve import loader_spec
from loaders import base
from loaders.datasets import load_dataset
from tests.helpers import train


def write_png_tree(root, per_class: int = 12, size: int = 24, classes=("normal", "effusion"), mixed: bool = False):
    """A class-per-folder tree of greyscale-as-RGB PNGs (with `mixed`, every third file a JPEG)."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            grey = np.clip(60 + 90 * c + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
            img = Image.fromarray(np.stack([grey] * 3, -1))
            if mixed and i % 3 == 0:
                img.save(root / name / f"{i:03d}.jpg", quality=95)
            else:
                img.save(root / name / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("mixed", [False, True], ids=["png-only", "png-and-jpeg"])
def test_nvjpeg_batches_of_pngs_match_the_plain_loader(tmp_path, mixed):
    root = write_png_tree(tmp_path / "xray", mixed=mixed)
    cfg = parse_args(["--data", str(root), "--batch-size", "8", "--device", "cpu", "--data.workers", "2"]).config
    ds = load_dataset(cfg.data)
    device = torch.device("cpu")
    got = base.build_loader("nvjpeg", ds, "val", loader_spec(cfg), device, train=False)
    ref = base.build_loader("plain", ds, "val", loader_spec(cfg), device, train=False)
    got_x, got_y = zip(*got)
    ref_x, ref_y = zip(*ref)
    assert torch.equal(torch.cat(got_y), torch.cat(ref_y))
    n = len(ds.val)
    # PNG pixels are exact; JPEG rows come from two decoders (torchvision vs plain's).
    diff = (torch.cat(got_x) - torch.cat(ref_x))[:n].abs()
    assert float(diff.max()) <= (0.2 if mixed else 1e-5), float(diff.max())
    assert not got.bad.items


def test_train_cli_with_nvjpeg_on_a_png_folder(tmp_path):
    # In-process through `engine.train.main` (what `python -m engine.train` calls; issue 25): a
    # whole run on a PNG-only folder, no report (not what this checks) and no plan calibration.
    root = write_png_tree(tmp_path / "xray", per_class=20)
    out = train(root, tmp_path / "run", ["--loader", "nvjpeg", "--device", "cpu", "--model", "mlp", "--epochs", "1",
                                         "--batch-size", "8", "--train.progress", "off", "--run.plan", "off"],
                report=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loader"] == "nvjpeg" and metrics["data.skipped"] == 0
