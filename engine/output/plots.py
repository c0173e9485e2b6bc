"""The report's figures, one function per PNG; each takes plain numpy arrays and a path.

matplotlib runs headless (Agg). Curves are computed here with numpy (no scikit-learn at run
time): ROC and precision-recall at every distinct score, the same points sklearn draws.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_bytes

DPI = 110


def _pyplot():
    """matplotlib.pyplot on the headless backend, imported at the first figure: it costs about a
    second per process, which runs with --run.report false, predict and the saved test outputs
    (multilabel_report.worst_rows) never need to pay."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    _pyplot().close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getbuffer()))  # a full disk keeps the previous figure whole
    return path


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


# ----------------------------------------------------------------------------- curves

def roc_rates(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at each distinct threshold, from (0, 0)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(1 - y)[last_of_tie]
    return np.r_[0, fp] / max(fp[-1], 1), np.r_[0, tp] / max(tp[-1], 1)


def pr_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(recall, precision, average precision) as sklearn's precision_recall_curve / AP."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, seen = np.cumsum(y)[last_of_tie], last_of_tie + 1.0
    recall = tp / max(tp[-1], 1)
    precision = tp / seen
    ap = float(np.sum(np.diff(np.r_[0, recall]) * precision))
    return np.r_[0, recall], np.r_[1, precision], ap


def _positives(labels: np.ndarray, c: int) -> np.ndarray:
    """Rows of class c; with multi-label findings (N x K 0/1) the rows that have finding c."""
    return labels[:, c] > 0.5 if labels.ndim == 2 else labels == c


# ----------------------------------------------------------------------------- figures

def confusion(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    rows = cm.sum(1, keepdims=True)
    normalized = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    k = len(classes)
    fig, axes = _pyplot().subplots(1, 2, figsize=(4 + 1.1 * k, 1.8 + 0.55 * k))
    for ax, data, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], normalized, "row-normalized (recall)", ".2f")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        ax.set_title(f"Confusion matrix: {title}")
        ax.set_xticks(range(k), [_short(c) for c in classes], rotation=45, ha="right")
        ax.set_yticks(range(k), [_short(c) for c in classes])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(k):
            for j in range(k):
                value = format(data[i, j], fmt)
                ax.text(j, i, value, ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > 0.6 * data.max() else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def roc_curves(probs: np.ndarray, labels: np.ndarray, classes: list[str], auc: dict, path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(6.2, 5.4))
    for c, name in enumerate(classes):
        positive = _positives(labels, c)
        if positive.any() and not positive.all():
            fpr, tpr = roc_rates(probs[:, c], positive)
            ax.plot(fpr, tpr, lw=1.4, label=f"{name} (AUC {auc.get(name, float('nan')):.3f}, n={positive.sum()})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title="ROC, one-vs-rest per class", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pr_curves(probs: np.ndarray, labels: np.ndarray, classes: list[str], path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(6.2, 5.4))
    for c, name in enumerate(classes):
        positive = _positives(labels, c)
        if positive.any():
            recall, precision, ap = pr_points(probs[:, c], positive)
            line, = ax.step(recall, precision, where="pre", lw=1.4, label=f"{name} (AP {ap:.3f})")
            ax.axhline(positive.mean(), color=line.get_color(), lw=0.6, ls=":")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall per class (dotted: prevalence)",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def per_class_accuracy(classes: list[str], sensitivity: list[float], specificity: list[float],
                       support: list[int], path: Path) -> Path:
    x = np.arange(len(classes))
    fig, ax = _pyplot().subplots(figsize=(2 + 0.9 * len(classes), 4.2))
    bars = ax.bar(x - 0.2, sensitivity, 0.4, label="accuracy on the class (sensitivity)")
    ax.bar(x + 0.2, specificity, 0.4, label="specificity", alpha=0.6)
    for bar, value, n in zip(bars, sensitivity, support):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.2f}\nn={n}", ha="center", fontsize=7)
    ax.set_xticks(x, [_short(c) for c in classes], rotation=30, ha="right")
    ax.set(ylim=(0, 1.18), ylabel="fraction", title="Per-class accuracy (test)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    return _save(fig, path)


def learning_curves(history: list[dict], path: Path) -> Path:
    epochs = [row["epoch"] + 1 for row in history]
    panels = (("loss", [("train.loss", "train (training loss)"), ("val.log_loss", "val (log loss)")]),
              ("accuracy", [("train.accuracy", "train"), ("val.accuracy", "val")]),
              ("balanced accuracy", [("train.balanced_accuracy", "train"), ("val.balanced_accuracy", "val")]))
    fig, axes = _pyplot().subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, series) in zip(axes, panels):
        drawn = 0
        for key, label in series:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", ms=3, label=label)
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(_pyplot().MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    return _save(fig, path)


def class_distribution(classes: list[str], counts: dict[str, np.ndarray], sampled: list[int] | None,
                       path: Path) -> Path:
    x = np.arange(len(classes))
    series = [(name, np.asarray(v)) for name, v in counts.items()]
    if sampled is not None:
        series.append(("train as sampled (last epoch)", np.asarray(sampled)))
    width = 0.8 / len(series)
    fig, ax = _pyplot().subplots(figsize=(2.5 + 1.0 * len(classes), 4.2))
    for i, (name, values) in enumerate(series):
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=f"{name} ({int(values.sum())})")
    ax.set_xticks(x, [_short(c) for c in classes], rotation=30, ha="right")
    ax.set(ylabel="images", title="Class distribution")
    if max(int(v.max()) for _, v in series) > 20 * max(1, min(int(v[v > 0].min()) for _, v in series if (v > 0).any())):
        ax.set_yscale("log")  # imbalanced sets: the small classes would be invisible otherwise
    ax.legend(fontsize=8)
    return _save(fig, path)


def _reliability_panel(ax, hist, count: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray, title: str) -> None:
    bins = len(count)
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    used = count > 0
    ax.bar(centers[used], accuracy[used], width=1 / bins, edgecolor="black", alpha=0.75, label="accuracy in bin")
    ax.scatter(centers[used], confidence[used], color="tab:red", marker="_", s=200, linewidths=2.5,
               label="mean confidence in bin", zorder=3)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    hist.bar(centers, count, width=1 / bins, color="gray")
    hist.set(xlabel="confidence (max probability)", ylabel="images")


def reliability(count: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray, ece: float, path: Path) -> Path:
    fig, (ax, hist) = _pyplot().subplots(2, 1, figsize=(5.4, 6), height_ratios=(3, 1), sharex=True)
    _reliability_panel(ax, hist, count, confidence, accuracy, f"Reliability diagram (ECE {ece:.3f})")
    return _save(fig, path)


def reliability_before_after(before: tuple, after: tuple, ece_before: float, ece_after: float, path: Path) -> Path:
    """Side by side: the raw scores and the calibrated ones; each of `before`, `after` is
    (count, mean confidence, accuracy) per bin (engine.score.metrics.calibration_bins)."""
    fig, axes = _pyplot().subplots(2, 2, figsize=(10, 6), height_ratios=(3, 1), sharex=True)
    _reliability_panel(axes[0, 0], axes[1, 0], *before, f"Before calibration (ECE {ece_before:.3f})")
    _reliability_panel(axes[0, 1], axes[1, 1], *after, f"After calibration (ECE {ece_after:.3f})")
    return _save(fig, path)


def misclassified(images: np.ndarray, true: list[str], pred: list[str], confidence: np.ndarray, path: Path) -> Path:
    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = _pyplot().subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for ax, img, t, p, conf in zip(axes.flat, images, true, pred, confidence):
        ax.imshow(img, interpolation="nearest" if img.shape[0] < 64 else "bilinear")
        ax.set_title(f"true {t}\npred {p} ({conf:.2f})", fontsize=9)
    fig.suptitle("Most confidently misclassified test images")
    return _save(fig, path)
