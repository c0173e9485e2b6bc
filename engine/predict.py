"""`python -m engine.predict --checkpoint DIR --data PATH --out FILE.csv [--tta | --no-tta] [--split all|test|val|train]
[--device auto|cpu|cuda] [--batch-size N] [--loader NAME] [--amp] [--explain DIR]`

Writes one CSV row per image: its split and position in that split (for a `.npz`, the row of
`<split>_images`), file (relative to the data folder; empty for array datasets), true label,
predicted label, confidence and one probability column per class (`p_<class>`); probabilities
and prediction include the checkpoint's stored prior correction, and a binary checkpoint with
an operating threshold (`--eval.target_sensitivity`) adds a `decision` column. The default
`--split all` scores every image of the dataset, whatever subset the run trained on.

`--data` may also be unlabelled, as new patients come: one image, a flat folder of images,
or a CSV listing files (loaders/unlabelled.py). Every readable image gets a row (split
`unlabelled`, label empty); unreadable ones are named on stderr and listed with their
reason in `<out>.skipped.csv`.

TTA follows the run's own setting unless --tta or --no-tta is given. `--checkpoint` may be an
engine.cv folder: the folds' calibrated, corrected probabilities averaged (engine/score/ensemble.py).

`--explain DIR` also writes one Grad-CAM overlay PNG per image for its predicted class
(engine/output/saliency.py), named after the image: its relative path with `.png`, or
`<split>_<index>.png` for array datasets. The map is of the image as scored without TTA.
Multi-label findings: the map is for each image's top finding, named in an `explained` column.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.score import decisions
from engine.output import multilabel_predict, saliency, skip_list
from engine.score.evaluation import run_is_multilabel
from common.atomic import atomic_write_bytes
from engine.options.config import ConfigError
from common.options import opt
from engine.score.inference import SPLITS, ScoreOptions, cli_main, relative_name, score_checkpoint
from loaders.unlabelled import SPLIT as UNLABELLED


@dataclass
class Options(ScoreOptions):
    out: str = opt("", path=True, required=True, help="the .csv file written (one row per image)")
    split: str = opt("all", choices=SPLITS, help="rows scored; all = every image, whatever the run trained on")
    explain: str = opt("", path=True, help="also write one Grad-CAM overlay PNG per image into this folder")


def predict(options: dict) -> Path:
    if not options["out"].endswith(".csv"):
        raise ConfigError(f"engine.predict: --out must name a .csv file; got {options['out']!r}")
    if options["explain"] and Path(options["explain"]).exists() and not Path(options["explain"]).is_dir():
        raise ConfigError(f"engine.predict: --explain {options['explain']} is a file; name a folder for the overlays")
    scored = score_checkpoint(options)
    ds, row_split, seconds = scored.run.dataset, scored.row_split, scored.seconds
    raw, decision = scored.scores, scored.run.decision
    if run_is_multilabel(scored.run):  # one probability and one decision column per finding
        return multilabel_predict.write_findings_csv(options, scored)
    # The stored correction and threshold, as evaluate applies them; no metrics: rows may be unlabelled.
    p = decisions.adjust(raw.probs, decision).cpu().numpy()  # sync point: once, after scoring
    calls = decisions.decide(raw.probs, decision).cpu().numpy()
    y = raw.labels.cpu().numpy()
    files = raw.loader.split.files
    root = ds.source if Path(ds.source).is_dir() else str(Path(ds.source).parent)  # a CSV or one image: its folder
    classes = ds.classes
    extra = ["decision"] if decision and decision.get("threshold") is not None else []  # binary operating threshold
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["split", "index", "file", "label", "prediction", "confidence"] + [f"p_{c}" for c in classes] + extra)
    position, overlay_names = {}, []
    for i in range(len(y)):
        name = relative_name(files[i], root) if files is not None else ""
        position[row_split[i]] = index = position.get(row_split[i], -1) + 1
        overlay_names.append(saliency.overlay_name(name, row_split[i], index))
        label = "" if row_split[i] == UNLABELLED else classes[y[i]]
        row = [row_split[i], index, name, label, classes[int(p[i].argmax())], f"{p[i].max():.6f}"]
        writer.writerow(row + [f"{v:.6f}" for v in p[i]] + [classes[calls[i]]] * len(extra))
    out = Path(options["out"])
    atomic_write_bytes(out, lambda fh: fh.write(buf.getvalue().encode()))
    skip_list.write(out, ds.skipped + sorted(scored.scores.loader.bad.items.items()))
    if options["explain"]:  # after the CSV: the maps need a backward pass per image, outside scoring
        written = saliency.write_overlays(options["explain"], overlay_names, scored, calls)
        print(f"explain: {written} Grad-CAM overlays -> {options['explain']}")
    print(f"predictions: {len(y)} images, {len(classes)} classes, tta {'on' if options['tta'] else 'off'}, "
          f"{seconds:.1f}s -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, __doc__, Options, "engine.predict", predict)


if __name__ == "__main__":
    sys.exit(main())
