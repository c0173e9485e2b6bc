"""`make gpu-pack`: fill the ignored `.gpu/` folder with the data `make gpu-check` reads there.

One transfer to the GPU machine holds about 64 MiB, so this packs a stratified HAM10000
subset (default 2,500 JPEGs with their labels.csv) and dermamnist28.npz within a budget
(default 55 MiB), copied from ../shared/data. Never committed: `.gpu/` is in .gitignore.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import csv
import random
import shutil
import sys
from dataclasses import dataclass
from collections import defaultdict
from pathlib import Path

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def stratified(rows: list[list[str]], label_col: int, count: int, seed: int = 0) -> list[list[str]]:
    """`count` rows with every class's share kept (at least one per class), chosen reproducibly."""
    by_class = defaultdict(list)
    for row in rows:
        by_class[row[label_col]].append(row)
    rng = random.Random(seed)
    chosen = []
    for label in sorted(by_class):
        members = by_class[label]
        take = max(1, round(count * len(members) / len(rows)))
        chosen += [members[i] for i in sorted(rng.sample(range(len(members)), min(take, len(members))))]
    return chosen


def pack(src: Path, dest: Path, images: int, budget_mib: float) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    used = 0
    npz = src / "dermamnist28.npz"
    if npz.exists():
        shutil.copyfile(npz, dest / npz.name)
        used += npz.stat().st_size
    ham = src / "ham10000_224"
    with open(ham / "labels.csv", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    label_col = header.index("dx") if "dx" in header else 1
    subset_dir = dest / "ham_subset"
    if subset_dir.exists():
        shutil.rmtree(subset_dir)  # a smaller pack must not keep files from a larger one
    (subset_dir / "images").mkdir(parents=True)
    kept = []
    for row in stratified(rows, label_col, images):
        source = ham / "images" / Path(row[0]).name if not (ham / row[0]).exists() else ham / row[0]
        size = source.stat().st_size
        if used + size > budget_mib * 2**20:
            break
        shutil.copyfile(source, subset_dir / "images" / source.name)
        used += size
        kept.append([f"images/{source.name}"] + row[1:])
    with open(subset_dir / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header] + kept)
    return {"dest": str(dest), "ham_images": len(kept), "dermamnist": npz.exists(), "mib": used / 2**20}


@dataclass
class Options:
    src: str = opt(str(REPO.parent / "shared" / "data"), help="folder with ham10000_224/ and dermamnist28.npz")
    dest: str = opt(str(REPO / ".gpu"), help="folder the pack is written to")
    images: int = opt(2500, help="HAM10000 images taken into the pack")
    budget_mib: float = opt(55.0, help="size the pack must stay under, in MiB")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.gpu_pack", __doc__.split("\n")[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.gpu_pack", suggest)[0]
    src = Path(args.src)
    if not (src / "ham10000_224" / "labels.csv").exists():
        raise ConfigError(f"{src}/ham10000_224/labels.csv not found; pass --src DIR with ham10000_224/ and dermamnist28.npz")
    info = pack(src, Path(args.dest), args.images, args.budget_mib)
    print(f"packed {info['ham_images']} HAM JPEGs + {'dermamnist28.npz' if info['dermamnist'] else 'no npz'} "
          f"into {info['dest']} ({info['mib']:.1f} MiB); carry it with the run tool's carry=['.gpu']")
    return 0


if __name__ == "__main__":
    sys.exit(main())
