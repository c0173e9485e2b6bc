"""The run report: PNG figures and `report/README.md`, rebuilt from the run folder alone.

`python -m engine.report RUN_DIR` (engine/report.py) regenerates it. Inputs are files the run wrote:
`metrics.json`, `history.jsonl` and `test_predictions.npz` (test probabilities, labels, row
indices, per-split class counts and thumbnails of the most confidently wrong images, saved by
`save_test_outputs` at the end of training or evaluation).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from engine.output import multilabel_report, plots, saliency
from engine.output.report_markdown import figures_section
from common.atomic import WriteError, atomic_write_bytes, read_jsonl
from engine.options.config import ConfigError
from engine.score.metrics import calibration_bins

PREDICTIONS = "test_predictions.npz"
THUMBNAIL = 128   # side of the saved error images: enough to see the lesion, small on disk
ERRORS_SHOWN = 16

FIGURES = {
    "confusion_matrix.png": "Confusion matrix (counts and row-normalized)",
    "roc_curves.png": "ROC curves, one-vs-rest per class",
    "pr_curves.png": "Precision-recall curves per class",
    "per_class_accuracy.png": "Per-class accuracy (sensitivity) and specificity",
    "learning_curves.png": "Learning curves: loss, accuracy, balanced accuracy (train and val)",
    "class_distribution.png": "Class distribution per split",
    "reliability_diagram.png": "Reliability diagram (calibration)",
    "reliability_before_after.png": "Reliability before and after temperature scaling (test)",
    "misclassified.png": "Most confidently misclassified test images",
}
# Drawn when the run folder holds what they need (engine/output/saliency.py: a CNN's Grad-CAM sample).
OPTIONAL_FIGURES = {
    "gradcam.png": "Grad-CAM: where the model looked, for correct and misclassified test images per class",
}


# ----------------------------------------------------------------------------- saving (run time)

def _thumbnails(split, rows: np.ndarray) -> np.ndarray:
    from loaders import images  # file datasets only; keeps this module light otherwise
    if split.images is not None:
        return np.asarray(split.images[rows])
    out = np.zeros((len(rows), THUMBNAIL, THUMBNAIL, 3), np.uint8)
    for i, row in enumerate(rows):
        try:
            out[i] = images.decode(images.read_bytes(split.files[row]), THUMBNAIL)
        except images.BadImage:
            pass  # left black; the file was reported when it failed during evaluation
    return out


def save_test_outputs(run_dir: str | Path, probs: torch.Tensor, labels: torch.Tensor, split,
                      class_counts: dict[str, list[int]], uncalibrated: torch.Tensor | None = None) -> Path:
    """Write what the report needs about the test split; `split` is the evaluated one, in order.
    `uncalibrated`: the scores before temperature and prior correction, for the before/after diagram."""
    p = probs.detach().float().cpu().numpy()     # sync point: once, after the final evaluation
    y = labels.detach().cpu().numpy().astype(np.int64)
    if y.ndim == 2:  # multi-label findings: N x K 0/1
        worst = multilabel_report.worst_rows(p, y, ERRORS_SHOWN)
    else:
        pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
        confidence = p.max(1) if len(p) else np.zeros(0, np.float32)
        wrong = np.flatnonzero(pred != y)
        worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:ERRORS_SHOWN]
    arrays = {"probs": p, "labels": y, "index": np.arange(len(y)), "error_rows": worst,
              "error_images": _thumbnails(split, worst)}
    if uncalibrated is not None:
        arrays["probs_uncalibrated"] = uncalibrated.detach().float().cpu().numpy()
    if split.files is not None:
        arrays["files"] = np.asarray(split.files, dtype=str)
    for name, counts in class_counts.items():
        arrays[f"counts_{name}"] = np.asarray(counts, np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(run_dir) / PREDICTIONS
    atomic_write_bytes(path, lambda fh: fh.write(buf.getbuffer()))
    return path


# ----------------------------------------------------------------------------- building

def _number(value) -> float:
    return float("nan") if value is None else value  # null: not computable (engine/score/metric_validity.py)


def _per_class(metrics: dict, prefix: str, kind: str, classes: list[str]) -> list[float]:
    return [_number(metrics.get(f"{prefix}.{kind}.{c}")) for c in classes]


def build_report(run_dir: str | Path) -> list[Path]:
    """(Re)generate every figure and the README of `run_dir/report`; returns the files written."""
    run = Path(run_dir)
    if not (run / "metrics.json").exists() or not (run / PREDICTIONS).exists():
        raise ConfigError(f"{run}: not a finished run folder (needs metrics.json and {PREDICTIONS})")
    metrics = json.loads((run / "metrics.json").read_text())
    history = read_jsonl(run / "history.jsonl")
    with np.load(run / PREDICTIONS, allow_pickle=False) as npz:
        saved = {k: npz[k] for k in npz.files}
    classes = list(metrics["classes"])
    probs, labels = saved["probs"], saved["labels"]
    if labels.ndim == 2:  # multi-label findings: their own figures and table, the Grad-CAM sample per finding
        (run / "report").mkdir(exist_ok=True)
        extra = [saliency.grid_figure(run / saliency.SAMPLE_FILE, classes, run / "report" / saliency.FIGURE)
                 ] if (run / saliency.SAMPLE_FILE).exists() else []
        return multilabel_report.build_multilabel_report(metrics, history, saved, run / "report", extra)
    pred = probs.argmax(1)
    cm = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(cm, (labels, pred), 1)
    out = run / "report"
    out.mkdir(exist_ok=True)

    written = [
        plots.confusion(cm, classes, out / "confusion_matrix.png"),
        plots.roc_curves(probs, labels, classes, dict(zip(classes, _per_class(metrics, "test", "auc", classes))),
                         out / "roc_curves.png"),
        plots.pr_curves(probs, labels, classes, out / "pr_curves.png"),
        plots.per_class_accuracy(classes, _per_class(metrics, "test", "sensitivity", classes),
                                 _per_class(metrics, "test", "specificity", classes),
                                 [int(v) for v in cm.sum(1)], out / "per_class_accuracy.png"),
        plots.learning_curves(history, out / "learning_curves.png"),
    ]
    counts = {key[len("counts_"):]: value for key, value in saved.items() if key.startswith("counts_")}
    counts = counts or {"test": cm.sum(1)}
    sampled = history[-1].get("train.class_histogram") if history else None
    written.append(plots.class_distribution(classes, counts, sampled, out / "class_distribution.png"))
    count, conf, acc = (t.numpy() for t in calibration_bins(torch.from_numpy(probs), torch.from_numpy(labels)))
    written.append(plots.reliability(count, conf, acc, _number(metrics.get("test.ece")),
                                     out / "reliability_diagram.png"))
    if "probs_uncalibrated" in saved:
        raw = torch.from_numpy(saved["probs_uncalibrated"])
        before = [t.numpy() for t in calibration_bins(raw, torch.from_numpy(labels))]
        written.append(plots.reliability_before_after(before, (count, conf, acc),
                                                      metrics.get("test.ece_uncalibrated", float("nan")),
                                                      metrics.get("test.ece", float("nan")),
                                                      out / "reliability_before_after.png"))
    rows = saved["error_rows"]
    written.append(plots.misclassified(saved["error_images"], [classes[labels[r]] for r in rows],
                                       [classes[pred[r]] for r in rows], probs[rows].max(1) if len(rows) else [],
                                       out / "misclassified.png"))
    if (run / saliency.SAMPLE_FILE).exists():  # written at run end when the model has a conv layer
        written.append(saliency.grid_figure(run / saliency.SAMPLE_FILE, classes, out / saliency.FIGURE))
    readme = out / "README.md"
    text = markdown(metrics, classes, history, [p.name for p in written]).encode()
    atomic_write_bytes(readme, lambda fh: fh.write(text))
    return written + [readme]


def build_or_warn(run_dir: str | Path) -> bool:
    """For the end of a run: a plotting failure is logged, never allowed to fail the finished run;
    a failed write (full disk) is raised: the outputs would be incomplete without a word."""
    import logging
    try:
        build_report(run_dir)
        return True
    except WriteError:  # a full disk or read-only folder is the machine's fault: said as one error line
        raise
    except Exception as exc:  # matplotlib and numpy raise many kinds; the metrics are already saved
        logging.getLogger("medtrain.report").warning(
            "report not written (%s: %s); retry with python -m engine.report %s", type(exc).__name__, exc, run_dir)
        return False


# ----------------------------------------------------------------------------- markdown

SUMMARY_ROWS = (("accuracy", "accuracy"), ("balanced accuracy (UAR)", "balanced_accuracy"),
                ("macro F1", "f1_macro"), ("weighted F1", "f1_weighted"), ("macro precision", "precision_macro"),
                ("macro recall", "recall_macro"), ("weighted precision", "precision_weighted"),
                ("macro AUC (one-vs-rest)", "auc_macro"), ("expected calibration error", "ece"),
                ("ECE before calibration", "ece_uncalibrated"), ("temperature", "temperature"),
                ("log loss", "log_loss"), ("images", "n"))


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) > 1):
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"


def _with_interval(metrics: dict, prefix: str, key: str) -> str:
    text = _fmt(metrics.get(f"{prefix}.{key}"))
    low, high = metrics.get(f"{prefix}.{key}_ci_low"), metrics.get(f"{prefix}.{key}_ci_high")
    if low is not None and high is not None:
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def markdown(metrics: dict, classes: list[str], history: list[dict], figures: list[str]) -> str:
    splits = [s for s in ("test", "val") if f"{s}.accuracy" in metrics]
    lines = ["# Run report", ""]
    facts = [(k, metrics.get(k)) for k in ("model", "image_size", "epochs", "best_epoch", "device",
                                            "wall_seconds", "train.images_per_second", "checkpoint", "data", "split", "tta")]
    lines += [" · ".join(f"**{k}** {v if isinstance(v, (str, bool)) else _fmt(v)}" for k, v in facts if v is not None), ""]
    warnings = list(metrics.get("data.warnings") or []) + [metrics[k] for k in ("test.note", "val.note") if metrics.get(k)]
    if warnings:  # what the split cannot support, above the figures it concerns ("–" below: not computable)
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if metrics.get("selection"):
        lines += [f"**selection** {metrics['selection']}", ""]
    if metrics.get("calibration.note"):  # temperature scaling was asked for but had nothing meaningful to fit
        lines += [f"**calibration** {metrics['calibration.note']}", ""]
    lines += ["## Metrics", "", "Test figures use the selected (best validation) weights; brackets are "
              "bootstrap 95% intervals (1,000 resamples of the test images).", ""]
    lines += ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label, key in SUMMARY_ROWS:
        lines.append(f"| {label} | " + " | ".join(_with_interval(metrics, s, key) for s in splits) + " |")
    lines += ["", "## Per class (test)", "",
              "| class | images | sensitivity | specificity | precision | F1 | AUC |", "|---|---|---|---|---|---|---|"]
    for c in classes:
        cells = [_fmt(metrics.get(f"test.{k}.{c}")) for k in ("support", "sensitivity", "specificity", "precision", "f1", "auc")]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines + figures_section(history, figures, FIGURES | OPTIONAL_FIGURES))
