"""`python -m engine.predict --checkpoint DIR --data PATH --out FILE.csv [--tta] [--split all|test|val|train]
[--device auto|cpu|cuda] [--batch-size N] [--loader NAME] [--amp]`

Writes one CSV row per image: its split and position in that split (for a `.npz`, the row of
`<split>_images`), file (relative to the data folder; empty for array datasets), true label,
predicted label, confidence and one probability column per class (`p_<class>`); probabilities
and prediction include the checkpoint's stored prior correction, and a binary checkpoint with
an operating threshold (`--eval.target_sensitivity`) adds a `decision` column. The default
`--split all` scores every image of the dataset.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from engine.atomic import atomic_write_bytes
from engine.config import ConfigError
from engine.evaluation import summarized
from engine.inference import cli_main, relative_name, score_checkpoint

OPTIONS = {"checkpoint": "", "data": "", "out": "", "tta": False, "split": "all", "device": "auto",
           "batch_size": 0, "loader": "auto", "amp": False}


def predict(options: dict) -> Path:
    if not options["out"].endswith(".csv"):
        raise ConfigError(f"engine.predict: --out must name a .csv file; got {options['out']!r}")
    scored = score_checkpoint(options)
    ds, row_split, seconds = scored.run.dataset, scored.row_split, scored.seconds
    decided = summarized(scored.run, scored.scores)  # the stored correction and threshold, as evaluate applies them
    p = decided.probs.cpu().numpy()  # sync point: once, after scoring
    calls = decided.predictions.cpu().numpy()
    y = decided.labels.cpu().numpy()
    files = decided.loader.split.files
    classes = ds.classes
    decision = scored.run.decision
    extra = ["decision"] if decision and decision.get("threshold") is not None else []  # binary operating threshold
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["split", "index", "file", "label", "prediction", "confidence"] + [f"p_{c}" for c in classes] + extra)
    position = {}
    for i in range(len(y)):
        name = relative_name(files[i], ds.source) if files is not None else ""
        position[row_split[i]] = index = position.get(row_split[i], -1) + 1
        row = [row_split[i], index, name, classes[y[i]], classes[int(p[i].argmax())], f"{p[i].max():.6f}"]
        writer.writerow(row + [f"{v:.6f}" for v in p[i]] + [classes[calls[i]]] * len(extra))
    out = Path(options["out"])
    atomic_write_bytes(out, lambda fh: fh.write(buf.getvalue().encode()))
    print(f"predictions: {len(y)} images, {len(classes)} classes, tta {'on' if options['tta'] else 'off'}, "
          f"{seconds:.1f}s -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, __doc__, OPTIONS, ("checkpoint", "data", "out"), "engine.predict", predict)


if __name__ == "__main__":
    sys.exit(main())
