"""The embedded default dataset: deterministic, learnable, imbalanced JPEGs ("lesions").

Seven classes like dermoscopy, one dominant (~60%) and two rare (~2-3%). Each class has its
own blob shape, hue and texture; every image also gets nuisance variation (skin tone,
lighting gradient, blob position and size, hairs, JPEG noise) and a share of ambiguous
images whose class cues are weakened, so a small CNN learns it well above chance but not
perfectly. Written once as real JPEGs plus `labels.csv` (file,label,group) into a cache
folder keyed by the generator version, count and seed; later runs reuse the files.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from common.atomic import atomic_path
from loaders.cache import cache_root

VERSION = 2
SIZE = 64
CLASSES = ["nevus", "melanoma", "keratosis", "carcinoma", "actinic", "dermatofibroma", "vascular"]
SHARES = np.array([0.60, 0.11, 0.10, 0.08, 0.06, 0.03, 0.02])
# Per class: hue (RGB of the blob), shape irregularity, texture frequency, ring strength.
HUES = np.array([[110, 70, 45], [60, 35, 35], [150, 120, 80], [170, 90, 100],
                 [190, 110, 90], [130, 90, 60], [170, 40, 70]], np.float32)
IRREGULAR = np.array([0.05, 0.35, 0.15, 0.25, 0.10, 0.05, 0.10], np.float32)
TEXTURE = np.array([0.0, 3.0, 6.0, 0.0, 9.0, 0.0, 2.0], np.float32)
RING = np.array([0.0, 0.3, 0.0, 0.6, 0.0, 0.8, 0.2], np.float32)
AMBIGUOUS = 0.25  # share of images whose class cues are blended toward another class


def _render(rng: np.random.Generator, label: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    skin = np.array([225, 185, 160], np.float32) * rng.uniform(0.75, 1.05) + rng.normal(0, 8, 3)
    light = 1.0 + rng.uniform(-0.15, 0.15) * (xx - 0.5) + rng.uniform(-0.15, 0.15) * (yy - 0.5)
    img = skin[None, None, :] * light[..., None]

    other = rng.integers(0, len(CLASSES)) if rng.random() < AMBIGUOUS else label
    mix = rng.uniform(0.3, 0.7) if other != label else 0.0
    hue = (1 - mix) * HUES[label] + mix * HUES[other] + rng.normal(0, 12, 3)
    irregular = (1 - mix) * IRREGULAR[label] + mix * IRREGULAR[other]
    texture = (1 - mix) * TEXTURE[label] + mix * TEXTURE[other]
    ring = (1 - mix) * RING[label] + mix * RING[other]

    cy, cx = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.16, 0.32)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = sum(rng.uniform(-1, 1) * irregular * np.sin(k * angle + rng.uniform(0, 6.3)) for k in (3, 5, 7))
    dist = np.hypot(yy - cy, xx - cx) / (radius * (1 + wobble))
    inside = np.clip((1.0 - dist) * 8.0, 0, 1)
    pattern = 1.0 + 0.25 * np.sin(texture * 2 * np.pi * (xx + yy)) * (texture > 0)
    ring_mask = np.exp(-((dist - 0.75) ** 2) / 0.01) * ring
    lesion = hue[None, None, :] * pattern[..., None] * (1 - 0.5 * ring_mask[..., None])
    img = img * (1 - inside[..., None]) + lesion * inside[..., None]

    for _ in range(rng.integers(0, 4)):  # hairs: dark thin lines, a classic nuisance
        x0, y0, x1, y1 = rng.uniform(0, 1, 4)
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2 + 1e-6), 0, 1)
        d = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        img = img * (1 - 0.6 * (d < 0.008)[..., None])
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def ensure_synthetic(count: int = 3000, seed: int = 0, cache_dir: str = "") -> Path:
    """Write the dataset once (atomically, via a temp folder) and return its folder."""
    root = cache_root(cache_dir) / f"synthetic-v{VERSION}-n{count}-s{seed}"
    if (root / "labels.csv").exists():
        return root
    with atomic_path(root, directory=True) as tmp:  # another process that wins the race keeps its copy
        (tmp / "images").mkdir()
        rng = np.random.default_rng(seed)
        labels = rng.choice(len(CLASSES), size=count, p=SHARES / SHARES.sum())
        rows = []
        for i, label in enumerate(labels):
            name = f"images/img_{i:05d}.jpg"
            Image.fromarray(_render(rng, int(label))).save(tmp / name, quality=int(rng.integers(80, 96)))
            # Two images per "lesion", so the grouped split has something to group.
            rows.append((name, CLASSES[label], f"lesion_{i // 2 if labels[i // 2 * 2] == label else i}"))
        with open(tmp / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label", "group"])
            writer.writerows(rows)
    return root
