"""Grad-CAM saliency maps (the maintained `grad-cam` library, pytorch_grad_cam) over the images
a model saw: the report's per-class sample and `engine.predict --explain DIR`.

Maps are always computed on the bare, uncompiled module in eval mode and fp32 (no autocast),
outside any training step, compiled graph or CUDA graph: Grad-CAM needs a backward pass and
forward hooks, neither of which belongs in a captured step. The layer read per architecture
is models/cam_layers.py's rule. The input is exactly the evaluation input of the engine (the
run's eval preprocessing, `kernels.augment` reference implementation: crop, resize,
CLAHE/colour constancy when on, normalization), and the overlay is drawn on that input,
de-normalized, so map and picture line up pixel for pixel. The map is for the class the
run decided (argmax of the corrected probabilities, or the stored threshold).

Multi-label findings (an N x K 0/1 label matrix) have no single decided class: the report's
sample is per finding, its test positives the run found and those it missed (each mapped for
that finding's logit), and `--explain` maps each image's top finding (`top_findings`).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError
from common.atomic import atomic_write_bytes

log = logging.getLogger("medtrain.saliency")

SAMPLE_FILE = "saliency_sample.npz"  # beside test_predictions.npz; engine.report draws it
FIGURE = "gradcam.png"
PER_CLASS = 2       # up to this many correct and this many misclassified test images per class
BATCH = 16          # images per Grad-CAM pass: bounds the activations kept for the backward


def _grad_cam():
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ConfigError("saliency maps need grad-cam: pip install 'medtrain[explain]'") from None
    return GradCAM, ClassifierOutputTarget


def eval_augment(resolved, device: torch.device):
    """The run's evaluation preprocessing, float32 out (the engine's own, not a copy of it)."""
    from kernels.augment import DeviceAugment
    from loaders.base import augment_spec
    spec = augment_spec(resolved.loader, resolved.image_size, train=False)
    return DeviceAugment(spec, resolved.cfg.train.seed, device, impl="reference")


def raw_images(split, rows, native_size: int) -> np.ndarray:
    """uint8 NHWC of `rows` as the plain loader decodes them (unreadable files: black)."""
    from loaders import images
    if split.images is not None:
        return np.asarray(split.images[np.asarray(rows, np.int64)])
    out = np.zeros((len(rows), native_size, native_size, 3), np.uint8)
    for i, row in enumerate(rows):
        try:
            out[i] = images.decode(images.read_bytes(split.files[row]), native_size)
        except images.BadImage:
            pass  # already reported when scoring failed on it
    return out


def cam_maps(model: nn.Module, model_name: str, inputs: torch.Tensor, targets) -> np.ndarray:
    """(N, H, W) float maps in [0, 1] at the input's size, for class `targets[i]` of image i."""
    from models.cam_layers import cam_target_layers
    from models.metadata import MetadataFusion
    if isinstance(model, MetadataFusion):
        raise ConfigError("saliency maps for metadata-fused models are not supported (the map would need the "
                          "patient's metadata row too)")
    layers = cam_target_layers(model, model_name)  # before the library: a model with no map is refused without it
    GradCAM, Target = _grad_cam()
    was_training = model.training
    model.eval()
    maps = []
    try:
        with torch.enable_grad(), torch.autocast(inputs.device.type, enabled=False):
            with GradCAM(model=model, target_layers=layers) as cam:
                for start in range(0, len(inputs), BATCH):
                    chunk = inputs[start:start + BATCH].float().clone().requires_grad_(True)
                    wanted = [Target(int(t)) for t in targets[start:start + BATCH]]
                    maps.append(cam(input_tensor=chunk, targets=wanted))
    finally:
        model.train(was_training)
    return np.concatenate(maps) if maps else np.zeros((0,) + tuple(inputs.shape[2:]), np.float32)


def overlays(inputs: torch.Tensor, maps: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC: each map in the JET colormap over its de-normalized input, half and half."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    rgb = (inputs.detach().float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return np.stack([show_cam_on_image(np.ascontiguousarray(img), cam, use_rgb=True)
                     for img, cam in zip(rgb, maps)]) if len(maps) else np.zeros((0, 1, 1, 3), np.uint8)


def explain(model: nn.Module, model_name: str, resolved, device, raw: np.ndarray, targets) -> np.ndarray:
    """uint8 NHWC overlays for raw uint8 NHWC images (native size) and their target classes."""
    augment = eval_augment(resolved, device)
    batch = torch.from_numpy(np.ascontiguousarray(raw)).to(device).permute(0, 3, 1, 2)
    inputs = augment(batch, 0)
    maps = cam_maps(model, model_name, inputs, targets)
    return overlays(inputs, maps, augment.spec.mean, augment.spec.std)


# ----------------------------------------------------------------------------- the report's sample

def sample_rows(probs: np.ndarray, labels: np.ndarray, predictions: np.ndarray, per_class: int = PER_CLASS):
    """Per class (in class order): its `per_class` most confident correct rows, then its
    `per_class` most confidently misclassified rows; ties broken by row order. Deterministic."""
    confidence = probs.max(1) if len(probs) else np.zeros(0)
    rows = []
    for c in range(probs.shape[1] if probs.ndim == 2 else 0):
        for correct in (True, False):
            pick = np.flatnonzero((labels == c) & ((predictions == c) == correct))
            rows += pick[np.argsort(-confidence[pick], kind="stable")][:per_class].tolist()
    return np.asarray(rows, np.int64)


def sample_findings(probs: np.ndarray, labels: np.ndarray, decided: np.ndarray, per_class: int = PER_CLASS):
    """Multi-label: per finding (in order), its `per_class` test positives found with the highest
    probability, then its `per_class` positives missed with the lowest (the most confidently
    missed); ties broken by row order. Returns rows, finding per row, found per row, probability."""
    rows, shown, found = [], [], []
    for k in range(labels.shape[1] if labels.ndim == 2 else 0):
        positive = labels[:, k] > 0.5
        for hit in (True, False):
            pick = np.flatnonzero(positive & ((decided[:, k] > 0) == hit))
            pick = pick[np.argsort(-probs[pick, k] if hit else probs[pick, k], kind="stable")][:per_class]
            rows += pick.tolist()
            shown += [k] * len(pick)
            found += [hit] * len(pick)
    rows, shown = np.asarray(rows, np.int64), np.asarray(shown, np.int64)
    return rows, shown, np.asarray(found, bool), probs[rows, shown] if len(rows) else np.zeros(0)


def top_findings(probs: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """Per image, the finding an --explain overlay maps: the most probable of the findings decided
    present, or the most probable finding when none is."""
    return np.where(decided.any(1), np.where(decided > 0, probs, -np.inf).argmax(1), probs.argmax(1)).astype(np.int64)


def _sample(probs: np.ndarray, labels: np.ndarray, predictions: np.ndarray):
    """rows, class mapped per row, correct per row, confidence per row; single- or multi-label."""
    if labels.ndim == 2:
        return sample_findings(probs, labels, predictions)
    rows = sample_rows(probs, labels, predictions)
    return rows, predictions[rows], predictions[rows] == labels[rows], probs[rows].max(1) if len(rows) else np.zeros(0)


def save_sample(run_dir, model, model_name: str, resolved, device, dataset, evaluation) -> Path:
    """Overlays for the report's fixed sample of test images, saved as `saliency_sample.npz`:
    `labels` the class (finding) each row stands for, `predictions` the class mapped, `correct`."""
    probs = evaluation.probs.detach().float().cpu().numpy()  # sync point: once, after the final evaluation
    labels = evaluation.labels.detach().cpu().numpy()
    predictions = evaluation.predictions.detach().cpu().numpy()
    rows, targets, correct, confidence = _sample(probs, labels, predictions)
    pictures = explain(model, model_name, resolved, device,
                       raw_images(evaluation.loader.split, rows, dataset.native_size), targets)
    shown = targets if labels.ndim == 2 else labels[rows]
    buf = io.BytesIO()
    np.savez_compressed(buf, overlays=pictures, rows=rows, labels=shown, predictions=targets, correct=correct,
                        confidence=confidence, multilabel=np.bool_(labels.ndim == 2))
    path = Path(run_dir) / SAMPLE_FILE
    atomic_write_bytes(path, lambda fh: fh.write(buf.getbuffer()))
    return path


def save_sample_or_warn(run_dir, model, model_name: str, resolved, device, dataset, evaluation) -> bool:
    """At the end of a run: a map that cannot be made is a warning, never a failed run (the
    metrics are saved); a failed write (full disk) is raised as its one error line."""
    from common.atomic import WriteError
    try:
        save_sample(run_dir, model, model_name, resolved, device, dataset, evaluation)
        return True
    except WriteError:
        raise
    except Exception as exc:  # grad-cam missing, a model without convolutions, ...
        # a model with no map to show (mlp, metadata fusion) is expected: said, not warned
        (log.info if isinstance(exc, ConfigError) else log.warning)(
            "Grad-CAM overlays not made (%s: %s)", type(exc).__name__, exc)
        (Path(run_dir) / SAMPLE_FILE).unlink(missing_ok=True)  # an older run's sample must not be shown
        return False


def grid_figure(sample: Path, classes: list[str], path: Path) -> Path:
    """One PNG: a row per class, its correct overlays then its misclassified ones (multi-label:
    a row per finding, its positives found then those missed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with np.load(sample, allow_pickle=False) as npz:
        pics, labels, preds, conf = npz["overlays"], npz["labels"], npz["predictions"], npz["confidence"]
        correct = npz["correct"] if "correct" in npz.files else preds == labels  # older samples: single-label
        findings = bool(npz["multilabel"]) if "multilabel" in npz.files else False
    present = [c for c in range(len(classes)) if (labels == c).any()] or [0]
    cols = 2 * PER_CLASS
    fig, axes = plt.subplots(len(present), cols, figsize=(2.2 * cols, 2.4 * len(present)), squeeze=False)
    for r, c in enumerate(present):
        mine = np.flatnonzero(labels == c)
        right, wrong = [i for i in mine if correct[i]], [i for i in mine if not correct[i]]
        slots = right[:PER_CLASS] + [None] * (PER_CLASS - len(right[:PER_CLASS])) + wrong[:PER_CLASS]
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            i = slots[k] if k < len(slots) else None
            if i is None:
                continue
            ax.imshow(pics[i])
            wrong = "missed" if findings else f"as {classes[preds[i]]}"
            verdict = ("found" if findings else "correct") if correct[i] else wrong
            ax.set_title(f"{classes[c]}: {verdict} ({conf[i]:.2f})", fontsize=7, color="black" if correct[i] else "red")
    fig.suptitle("Grad-CAM per finding: its positives found (left) and missed (right), test images" if findings else
                 "Grad-CAM for the decided class: correct (left) and misclassified (right) test images", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title above the first row
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))
    return path


# ----------------------------------------------------------------------------- engine.predict --explain

def overlay_name(relative: str, split: str, index: int) -> str:
    """The overlay's file under --explain: the image's relative path with .png (subfolders kept,
    so equal names in two folders never collide); array datasets: `<split>_<index>.png`. A file
    outside the data folder (an absolute name) keeps only its own name, prefixed by its index,
    so nothing is ever written beside the source image."""
    if not relative:
        return f"{split}_{index:05d}.png"
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        return f"{split}_{index:05d}_{path.with_suffix('.png').name}"
    return str(path.with_suffix(".png"))


def write_overlays(folder: str, names: list[str], scored, targets: np.ndarray) -> int:
    """One overlay PNG per scored row, under `folder`; returns how many were written."""
    from PIL import Image
    run = scored.run
    split = scored.scores.loader.split
    out = Path(folder)
    for start in range(0, len(names), BATCH):
        rows = list(range(start, min(start + BATCH, len(names))))
        pics = explain(run.model, scored.restored.model_name, run.resolved, run.device,
                       raw_images(split, rows, run.dataset.native_size), targets[rows])
        for row, pic in zip(rows, pics):
            path = out / names[row]
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(pic).save(buf, format="PNG")
            atomic_write_bytes(path, lambda fh, b=buf: fh.write(b.getvalue()))
    return len(names)
