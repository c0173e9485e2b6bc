"""Tiny learnable multi-label data for the tests: finding k paints a square in quadrant k."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["Effusion", "Mass", "Nodule", "Hernia"]


def findings(n: int, seed: int = 0, prevalence=(0.5, 0.35, 0.2, 0.06)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(prevalence))) < np.asarray(prevalence)).astype(np.uint8)


def learnable_images(y: np.ndarray, side: int = 16, seed: int = 0) -> np.ndarray:
    """Finding k paints a bright square in quadrant k: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (len(y), side, side, 3)).astype(np.uint8)
    cell = side // 2
    for i, j in zip(*np.nonzero(y)):
        r, c = divmod(int(j) % 4, 2)
        x[i, r * cell + 1:(r + 1) * cell - 1, c * cell + 1:(c + 1) * cell - 1, int(j) % 3] = 220
    return x


def write_csv_dataset(root: Path, y: np.ndarray, kind: str, side: int = 16) -> Path:
    """`kind` 'columns': one 0/1 column per finding (CheXpert style); 'separated': NIH's
    `Finding Labels` cell ('Effusion|Mass' or 'No Finding'); three images per patient."""
    root.mkdir(parents=True, exist_ok=True)
    x = learnable_images(y, side)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "patient_id"] + NAMES if kind == "columns" else ["Image Index", "Finding Labels", "Patient ID"])
        for i in range(len(y)):
            Image.fromarray(x[i]).save(root / f"img{i}.png")
            if kind == "columns":
                w.writerow([f"img{i}.png", f"p{i // 3}"] + [int(v) for v in y[i]])
            else:
                found = "|".join(n for n, v in zip(NAMES, y[i]) if v) or "No Finding"
                w.writerow([f"img{i}.png", found, f"p{i // 3}"])
    return root
