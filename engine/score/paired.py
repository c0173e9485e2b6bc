"""Paired differences between runs scored on the same images, for `engine.compare`.

Two runs' separate 95% intervals overlap long before their difference is uncertain: both are
wide for the same reason (which images happen to be in the test set), and that reason cancels
in a difference taken image by image. So each resample draws one set of images and scores
every run on it; the interval of (run - first run) over the resamples is the paired one.
Runs are aligned by image file (`test_predictions.npz` keeps them); runs scored on different
images, or on findings (multi-label), get a note saying why no paired figure is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.constants import BOOTSTRAP_RESAMPLES


def _scored(run: Path) -> dict[str, np.ndarray] | None:
    path = run / "test_predictions.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        if not {"probs", "labels", "files"} <= set(saved.files):
            return None
        return {key: saved[key] for key in ("probs", "labels", "files")}


def _why_unpaired(runs: list[Path], scored: list[dict | None]) -> str | None:
    missing = [r.name for r, s in zip(runs, scored) if s is None]
    if missing:
        return f"no test_predictions.npz with file names in {', '.join(missing)}"
    if any(s["labels"].ndim != 1 for s in scored):
        return "multi-label runs (findings are compared by their own intervals)"
    files = [set(s["files"].tolist()) for s in scored]
    if any(f != files[0] for f in files[1:]) or any(len(s["files"]) != len(f) for s, f in zip(scored, files)):
        return "the runs were scored on different images"
    if any(s["probs"].shape[1] != scored[0]["probs"].shape[1] for s in scored):
        return "the runs have different classes"
    return None


def paired_differences(runs: list[Path], labels: list[str],
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[list[dict], str | None]:
    """For each run after the first: its difference from the first in balanced accuracy and macro
    AUC on the same test images, with the paired bootstrap 95% interval; or ([], why not)."""
    import torch

    from engine.score.metrics import bootstrap_indices, bootstrap_scores
    scored = [_scored(r) for r in runs]
    why = _why_unpaired(runs, scored)
    if why:
        return [], why
    order = {name: i for i, name in enumerate(scored[0]["files"].tolist())}
    truth = torch.from_numpy(scored[0]["labels"]).long()
    # row 0: the test set itself (the point estimate); then the resamples, the same for every run
    draws = torch.cat([torch.arange(len(truth))[None], bootstrap_indices(len(truth), resamples, torch.device("cpu"))])
    figures = []
    for run, s in zip(runs, scored):
        rows = torch.tensor([order[name] for name in s["files"].tolist()])
        probs = torch.empty(s["probs"].shape, dtype=torch.float32)
        probs[rows] = torch.from_numpy(s["probs"]).float()  # into the first run's image order
        if not torch.equal(truth[rows], torch.from_numpy(s["labels"]).long()):
            return [], f"the runs label the same images differently ({run.name})"
        figures.append(bootstrap_scores(probs, truth, probs.shape[1], draws))  # (balanced accuracy, AUC)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    out = []
    for label, figure in zip(labels[1:], figures[1:]):
        row = {"run": label}
        for k, name in enumerate(("balanced_accuracy", "auc_macro")):
            diff = figure[k] - figures[0][k]
            resampled = diff[1:][~torch.isnan(diff[1:])]
            low, high = torch.quantile(resampled, q).tolist() if len(resampled) else (float("nan"),) * 2
            row[name] = (float(diff[0]), low, high)
        out.append(row)
    return out, None


def paired_table(first: str, rows: list[dict], why: str | None) -> str:
    if why:
        return f"paired differences: not given ({why})"
    lines = [f"paired differences from {first} on the same test images (difference [95% paired bootstrap interval]):"]
    for row in rows:
        cells = [f"{name} {d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for name, (d, lo, hi) in
                 (("balanced accuracy", row["balanced_accuracy"]), ("macro AUC", row["auc_macro"]))]
        lines.append(f"  {row['run']}: " + "   ".join(cells))
    return "\n".join(lines)
