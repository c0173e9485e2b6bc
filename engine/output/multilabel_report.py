"""The run report of multi-label findings: what `engine/output/run_report.py` writes for single-label runs,
per finding. Figures: ROC and precision-recall curves per finding, sensitivity and specificity
at each finding's validation-chosen threshold, learning curves, positives per finding per split,
the test images with the largest total error, Grad-CAM overlays per finding (engine/output/saliency.py)
when the model has a convolutional layer. README.md holds the whole-task figures and a
per-finding table (keys: engine/score/multilabel_metrics.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.output import plots
from engine.output.report_markdown import figures_section
from common.atomic import atomic_write_bytes

FIGURES = {
    "roc_curves.png": "ROC curves per finding",
    "pr_curves.png": "Precision-recall curves per finding (dotted: prevalence)",
    "per_class_accuracy.png": "Per-finding sensitivity and specificity at the validation-chosen thresholds",
    "learning_curves.png": "Learning curves: loss, exact-match accuracy, mean per-finding balanced accuracy",
    "class_distribution.png": "Positives per finding per split",
    "misclassified.png": "Test images with the largest total error over findings",
    "gradcam.png": "Grad-CAM per finding: where the model looked, for positives found and missed",
}
SUMMARY_ROWS = (("mean AUC over findings (auc_macro)", "auc_macro"), ("mean average precision (map)", "map"),
                ("mean per-finding balanced accuracy", "balanced_accuracy"),
                ("exact-match accuracy", "accuracy"), ("per-decision accuracy (1 - Hamming loss)", "hamming_accuracy"),
                ("macro F1", "f1_macro"), ("log loss (mean BCE)", "log_loss"), ("images", "n"))


def worst_rows(p: np.ndarray, y: np.ndarray, shown: int) -> np.ndarray:
    """Test rows with the largest summed |probability - truth|: the most confidently wrong."""
    error = np.abs(p - y).sum(1) if len(p) else np.zeros(0)
    return np.argsort(-error, kind="stable")[:shown]


def _get(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def build_multilabel_report(metrics: dict, history: list[dict], saved: dict, out: Path, extra: list[Path] = ()) -> list[Path]:
    """`extra`: figures already drawn into `out` (the Grad-CAM sample), listed after these."""
    classes = list(metrics["classes"])
    probs, labels = saved["probs"], saved["labels"]
    t = np.array([metrics.get(f"test.threshold.{c}", 0.5) for c in classes])
    per = lambda kind: [metrics.get(f"test.{kind}.{c}", float("nan")) for c in classes]  # noqa: E731
    counts = {key[len("counts_"):]: value for key, value in saved.items() if key.startswith("counts_")}
    counts = counts or {"test": labels.sum(0).astype(np.int64)}
    sampled = history[-1].get("train.class_histogram") if history else None
    rows = saved["error_rows"]
    decided = (probs[rows] >= t).astype(bool) if len(rows) else np.zeros((0, len(classes)), bool)
    names = lambda m: ["|".join(c for c, v in zip(classes, r) if v) or "none" for r in m]  # noqa: E731
    written = [
        plots.roc_curves(probs, labels, classes, {c: metrics.get(f"test.auc.{c}", float("nan")) for c in classes},
                         out / "roc_curves.png"),
        plots.pr_curves(probs, labels, classes, out / "pr_curves.png"),
        plots.per_class_accuracy(classes, per("sensitivity"), per("specificity"),
                                 [int(v) for v in labels.sum(0)], out / "per_class_accuracy.png"),
        plots.learning_curves(history, out / "learning_curves.png"),
        plots.class_distribution(classes, counts, sampled, out / "class_distribution.png"),
        plots.misclassified(saved["error_images"], names(labels[rows] > 0.5), names(decided),
                            np.abs(probs[rows] - labels[rows]).max(1) if len(rows) else [], out / "misclassified.png"),
    ] + list(extra)
    readme = out / "README.md"
    text = multilabel_markdown(metrics, classes, history, [p.name for p in written]).encode()
    atomic_write_bytes(readme, lambda fh: fh.write(text))
    return written + [readme]


def multilabel_markdown(metrics: dict, classes: list[str], history: list[dict], figures: list[str]) -> str:
    splits = [s for s in ("test", "val") if f"{s}.auc_macro" in metrics]
    lines = ["# Run report (multi-label findings)", "",
             "Each finding is a yes/no decision at its own threshold, chosen on validation; AUC and AP "
             "do not depend on it. Brackets: bootstrap 95% intervals over test images.", "",
             "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label, key in SUMMARY_ROWS:
        cells = []
        for s in splits:
            text = _get(metrics, f"{s}.{key}")
            low, high = metrics.get(f"{s}.{key}_ci_low"), metrics.get(f"{s}.{key}_ci_high")
            cells.append(text + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Per finding (test)", "",
              "| finding | positives | AUC | AP | threshold | sensitivity | specificity | F1 |",
              "|---|---|---|---|---|---|---|---|"]
    for c in classes:
        keys = ("support", "auc", "ap", "threshold", "sensitivity", "specificity", "f1")
        lines.append(f"| {c} | " + " | ".join(_get(metrics, f"test.{k}.{c}") for k in keys) + " |")
    return "\n".join(lines + figures_section(history, figures, FIGURES))
