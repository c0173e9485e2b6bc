"""engine.predict's CSV for multi-label findings: per image its split, position and file, the
true findings (`label`, `|`-joined, empty when unlabelled, `none` for no finding), the findings
decided (`prediction`, likewise), then one probability column `p_<finding>` and one 0/1
decision column `decision_<finding>` per finding, each decision at the threshold chosen on
validation and stored in the checkpoint (0.5 for a checkpoint without one). With `--explain DIR`
one Grad-CAM overlay per image maps its top finding (engine/output/saliency.py `top_findings`), named
in a last column `explained`."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from engine.score import multilabel_metrics
from engine.output import saliency, skip_list
from common.atomic import atomic_write_bytes
from engine.score.inference import relative_name
from loaders.unlabelled import SPLIT as UNLABELLED


def _joined(classes: list[str], row) -> str:
    return "|".join(c for c, v in zip(classes, row) if v > 0.5) or "none"


def write_findings_csv(options: dict, scored) -> Path:
    ds, row_split, raw, decision = scored.run.dataset, scored.row_split, scored.scores, scored.run.decision
    thresholds = (decision or {}).get("thresholds")
    probs = multilabel_metrics.calibrated_findings(raw.probs, decision)  # as evaluate scores them
    p = probs.cpu().numpy()  # sync point: once, after scoring
    calls = multilabel_metrics.decide_findings(probs, thresholds).cpu().numpy()
    y = raw.labels.cpu().numpy()
    files = raw.loader.split.files
    root = ds.source if Path(ds.source).is_dir() else str(Path(ds.source).parent)
    classes = ds.classes
    buf = io.StringIO()
    writer = csv.writer(buf)
    explained = saliency.top_findings(p, calls) if options["explain"] else None
    writer.writerow(["split", "index", "file", "label", "prediction"] + [f"p_{c}" for c in classes]
                    + [f"decision_{c}" for c in classes] + (["explained"] if options["explain"] else []))
    position, overlay_names = {}, []
    for i in range(len(p)):
        name = relative_name(files[i], root) if files is not None else ""
        position[row_split[i]] = index = position.get(row_split[i], -1) + 1
        overlay_names.append(saliency.overlay_name(name, row_split[i], index))
        label = "" if row_split[i] == UNLABELLED or y.ndim != 2 else _joined(classes, y[i])
        row = [row_split[i], index, name, label, _joined(classes, calls[i])]
        writer.writerow(row + [f"{v:.6f}" for v in p[i]] + [int(v) for v in calls[i]]
                        + ([classes[explained[i]]] if explained is not None else []))
    out = Path(options["out"])
    atomic_write_bytes(out, lambda fh: fh.write(buf.getvalue().encode()))
    skip_list.write(out, ds.skipped + sorted(raw.loader.bad.items.items()))
    if explained is not None:  # after the CSV: the maps need a backward pass per image, outside scoring
        written = saliency.write_overlays(options["explain"], overlay_names, scored, explained)
        print(f"explain: {written} Grad-CAM overlays (each image's top finding) -> {options['explain']}")
    print(f"predictions: {len(p)} images, {len(classes)} findings (one probability and one decision column each), "
          f"tta {'on' if options['tta'] else 'off'}, {scored.seconds:.1f}s -> {out}")
    return out
