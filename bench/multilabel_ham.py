"""A learnable multi-label task made from real HAM10000 images, for the mean-AUC check.

`python -m bench.multilabel_ham --ham DIR --out DIR [--images 3000] [--side 64]` writes, under
`--out` (a scratch folder, never the repository), PNGs and a `labels.csv` with columns
`image, lesion_id, mel, bkl, marker`: `mel` and `bkl` from the image's diagnosis (real findings),
`marker` a synthetic one (a dark ring drawn at a random place on 30% of the images, seeded), so
some rows have two 1s and the CSV is read as multi-label findings grouped by lesion. Every mel
and bkl image is taken first, the rest filled with other diagnoses. Then train on it:
`python -m engine.train --data OUT --model seedcnn --image-size 64 --epochs 10 ...` and read
`test.auc_macro` (and `test.auc.mel`, `test.auc.bkl`) from metrics.json.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError


def write_task(ham: Path, out: Path, images: int, side: int, seed: int = 0) -> Path:
    rows = list(csv.DictReader(open(ham / "labels.csv")))
    rows.sort(key=lambda r: r["dx"] not in ("mel", "bkl"))  # stable: the two findings first
    rng = np.random.default_rng(seed)
    (out / "img").mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "lesion_id", "mel", "bkl", "marker"])
        for i, row in enumerate(rows[:images]):
            im = Image.open(ham / "images" / row["file"]).convert("RGB").resize((side, side))
            marker = int(rng.random() < 0.3)
            if marker:
                centre, radius = rng.integers(side // 4, 3 * side // 4, 2), side // 6
                ImageDraw.Draw(im).ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius,
                                            centre[1] + radius], outline=(20, 20, 20), width=max(2, side // 24))
            name = f"img/{i}.png"
            im.save(out / name)
            writer.writerow([name, row["lesion_id"], int(row["dx"] == "mel"), int(row["dx"] == "bkl"), marker])
    return out


@dataclass
class Options:
    ham: str = opt("", path=True, required=True, help="HAM10000 folder with labels.csv and images/")
    out: str = opt("", path=True, required=True, help="scratch folder for the generated task")
    images: int = opt(3000, ge=10, help="images drawn from HAM10000")
    side: int = opt(64, ge=8, help="side of the written PNGs in pixels")


def _run(argv: list[str]) -> None:
    args = parse(argv, Options, "bench.multilabel_ham", suggest)[0]
    ham = Path(args.ham)
    if not (ham / "labels.csv").exists():
        raise ConfigError(f"--ham {ham}: no labels.csv (expected the HAM10000 folder)")
    print(write_task(ham, Path(args.out), args.images, args.side))


def main(argv: list[str] | None = None) -> int:
    return run_main(_run, argv, lambda: usage("bench.multilabel_ham", __doc__.splitlines()[0], Options))


if __name__ == "__main__":
    sys.exit(main())
