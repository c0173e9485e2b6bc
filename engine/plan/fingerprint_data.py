"""The dataset's fingerprint: the measured facts engine/plan/plan.py derives its choices from.

Everything here is read from the loaded Dataset and a small fixed sample of its images (at
most SAMPLE, drawn with a fixed seed), so measuring costs well under a second even for a
folder of large JPEGs: headers give the native sizes and modes, and the sample is decoded at
a reduced size (PIL's JPEG draft mode) for the colour and pose statistics.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE = 256          # images decoded for the colour and pose statistics
STAT_SIZE = 32        # side they are resized to: the statistics are about layout, not detail
SOG_POWER = 6         # Shades of Gray norm used for the illuminant estimate (as the kernel)


def _sample_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, SAMPLE), replace=False))


def _sample_image(path: str) -> tuple[np.ndarray, int, str]:
    """(STAT_SIZE x STAT_SIZE x 3 uint8, native side, mode) of one file or HDF5 store member."""
    import io

    from PIL import Image

    from loaders import dicom, images
    data = images.read_bytes(path)
    if dicom.is_dicom(data):  # pydicom, not PIL: the loaders' own rule, then resized
        full = images.decode(data, None)
        small = np.asarray(Image.fromarray(full).resize((STAT_SIZE, STAT_SIZE), Image.BILINEAR))
        grey = bool((full[..., 0] == full[..., 1]).all() and (full[..., 1] == full[..., 2]).all())
        return small, max(full.shape[:2]), "L" if grey else "RGB"
    with Image.open(io.BytesIO(data)) as im:
        side, mode = max(im.size), im.mode
        im.draft("RGB", (STAT_SIZE * 2, STAT_SIZE * 2))  # JPEG: decode at 1/2..1/8 scale
        return np.asarray(im.convert("RGB").resize((STAT_SIZE, STAT_SIZE), Image.BILINEAR)), side, mode


def _file_sample(files: list[str]) -> tuple[np.ndarray, list[int], list[str]]:
    """(N, STAT_SIZE, STAT_SIZE, 3) uint8, native sides (max of h, w), PIL modes of the sample."""
    arrays, sides, modes = [], [], []
    for i in _sample_rows(len(files)):
        try:
            array, side, mode = _sample_image(files[i])
        except Exception:  # unreadable files are the loaders' business; the fingerprint skips them
            continue
        arrays.append(array)
        sides.append(side)
        modes.append(mode)
    if not arrays:
        return np.zeros((0, STAT_SIZE, STAT_SIZE, 3), np.uint8), sides, modes
    return np.stack(arrays), sides, modes


def _array_sample(images: np.ndarray) -> np.ndarray:
    """A MedMNIST-style uint8 array (N, H, W[, C]) -> (n, STAT_SIZE, STAT_SIZE, 3) uint8."""
    x = torch.as_tensor(images[_sample_rows(len(images))])
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    x = x[..., :3].permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(STAT_SIZE, STAT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def colour_stats(sample: np.ndarray) -> dict:
    """Whether the images carry colour, and how much their illuminant (Shades of Gray estimate,
    as chromaticity r, g, b summing to 1) varies between images."""
    x = sample.astype(np.float64)
    if len(x) == 0:
        return {"colour": False, "illuminant_spread": 0.0}
    # Grey stored as RGB (X-ray, CT, OCT) has R = G = B up to compression noise.
    chroma_gap = np.abs(x - x.mean(-1, keepdims=True)).mean()
    illuminant = np.power(np.power(x + 1, SOG_POWER).mean((1, 2)), 1 / SOG_POWER)      # (n, 3)
    chromaticity = illuminant / illuminant.sum(1, keepdims=True)
    return {"colour": bool(chroma_gap > 2.0), "illuminant_spread": float(chromaticity.std(0).mean())}


def pose_stats(sample: np.ndarray) -> dict:
    """How fixed the pose is: the mean image's structure relative to one image's, and, per
    symmetry, how much the mean image changes under it (0 = invariant, 1 = as large as its structure)."""
    if len(sample) < 8:
        return {"pose_structure": 0.0, "asymmetry": {"hflip": 0.0, "vflip": 0.0, "rot90": 0.0}}
    grey = sample.astype(np.float64).mean(-1)                                            # (n, s, s)
    mean = grey.mean(0)
    structure = mean - mean.mean()
    per_image = np.mean([np.std(g) for g in grey])
    norm = np.linalg.norm(structure) + 1e-9
    asym = {"hflip": np.linalg.norm(mean - mean[:, ::-1]) / norm,
            "vflip": np.linalg.norm(mean - mean[::-1, :]) / norm,
            "rot90": np.linalg.norm(mean - np.rot90(mean)) / norm}
    return {"pose_structure": float(np.std(mean) / (per_image + 1e-9)),
            "asymmetry": {k: float(v) for k, v in asym.items()}}


def fingerprint(ds) -> dict:
    """Measured facts of a loaded `loaders.datasets.Dataset` (its train split for the statistics)."""
    train = ds.train
    if train.images is not None:
        images = train.images
        sample = _array_sample(images)
        sides = [int(max(images.shape[1], images.shape[2]))]
        channels = 1 if images.ndim == 3 or images.shape[-1] == 1 else int(images.shape[-1])
    else:
        sample, sides, modes = _file_sample(train.files)
        channels = 1 if modes and all(m in ("L", "I", "I;16", "1") for m in modes) else 3
    multilabel = train.labels.ndim == 2  # findings: positives per finding stand for class counts
    counts = (train.labels > 0.5).sum(0) if multilabel else np.bincount(train.labels, minlength=ds.num_classes)
    present = counts[counts > 0]
    colour = colour_stats(sample)
    return {
        "native_size": int(np.median(sides)) if sides else int(ds.native_size),
        "native_size_range": [int(min(sides)), int(max(sides))] if sides else [ds.native_size] * 2,
        "channels": channels,
        "colour": bool(channels >= 3 and colour["colour"]),
        "illuminant_spread": colour["illuminant_spread"],
        **pose_stats(sample),
        "n_train": int(len(train)), "n_val": int(len(ds.val)), "n_test": int(len(ds.test)),
        "classes": int(ds.num_classes),
        "class_counts": counts.tolist(),
        "imbalance_ratio": float(present.max() / present.min()) if len(present) else 1.0,
        "groups": train.groups is not None,
        "multilabel": bool(multilabel),
        "storage": "array" if train.images is not None else "files",
        # a benchmark file's own val/test partition (MedMNIST .npz): judged by its published metrics
        "benchmark_split": bool(getattr(ds, "official_split", False)),
    }
