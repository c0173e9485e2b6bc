"""Build ISIC-2024-shaped HDF5 image stores from the shared HAM images, for the scale curve.

Each size gets its own folder: train-image.hdf5 (one JPEG's bytes per isic_id key, stored as
np.void the way the challenge ships them) and train-metadata.csv (isic_id, target, patient_id
and a few metadata columns), with about one positive per thousand images. The images are random
crops of HAM images re-encoded at --px; the first --unique keys hold distinct crops, later keys
repeat one of them (same decode cost, a fraction of the generation time). Written outside the
repo (default /work/scale-data); never commit the output.

    python bench/make_isic_scale.py --sizes 40000,100000,400000 --out /work/scale-data
"""
from common.startup import start

start()  # first, like every entry point (common/startup.py); nothing here loads torch

import contextlib  # noqa: E402
import csv
import io
import os
import random
import sys
import time
from dataclasses import dataclass

import h5py
import numpy as np
from PIL import Image

from common.atomic import atomic_path
from common.cli import run_main, suggest
from common.options import opt, parse, usage

SITES = ["torso", "lower extremity", "upper extremity", "head/neck", "posterior torso"]


@dataclass
class Options:
    source: str = opt("../shared/data/ham10000_224/images", path=True, help="folder of HAM10000 JPEGs to crop from")
    out: str = opt("", path=True, required=True, help="folder the stores go to (one isic<N> folder per size)")
    sizes: str = opt("40000,100000,400000", help="comma-separated dataset sizes (images)")
    px: int = opt(128, ge=8, help="side of the re-encoded crops")
    positive_rate: float = opt(0.001, gt=0.0, lt=1.0, help="share of target=1 rows (ISIC 2024: ~1/1000)")
    patients: int = opt(1042, ge=1, help="patient ids drawn (ISIC 2024 has ~1k patients)")
    unique: int = opt(50000, ge=1, help="distinct encoded crops; keys beyond reuse one at random (a loaded 2-core "
                                        "machine encodes ~125 crops/s)")
    seed: int = opt(0, ge=0, help="random seed")


def load_sources(folder, limit=1500):
    # A decoded pool keeps the generator CPU-bound on crop+encode, not on decoding 400k JPEGs.
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))[:limit]
    return [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names]


def crop_jpeg(rng, pool, px):
    img = pool[rng.randrange(len(pool))]
    h, w = img.shape[:2]
    side = rng.randint(min(h, w) // 2, min(h, w))
    y, x = rng.randint(0, h - side), rng.randint(0, w - side)
    tile = Image.fromarray(img[y:y + side, x:x + side]).resize((px, px), Image.BILINEAR)
    buf = io.BytesIO()
    tile.save(buf, format="JPEG", quality=rng.randint(80, 92))
    return buf.getvalue()


def open_outputs(out, sizes, stack: contextlib.ExitStack):
    """Each size's two files, written under temp names that `stack` renames into place on a
    clean exit (after the files are closed: the stack closes in reverse order)."""
    outs = []
    for n in sizes:
        folder = os.path.join(out, f"isic{n // 1000}k" if n % 1000 == 0 else f"isic{n}")
        os.makedirs(folder, exist_ok=True)
        h5 = h5py.File(stack.enter_context(atomic_path(os.path.join(folder, "train-image.hdf5"))), "w")
        stack.callback(h5.close)
        fh = stack.enter_context(open(stack.enter_context(atomic_path(os.path.join(folder, "train-metadata.csv"))),
                                      "w", newline=""))
        w = csv.writer(fh)
        w.writerow(["isic_id", "target", "patient_id", "age_approx", "sex",
                    "anatom_site_general", "tbp_lv_areaMM2"])
        outs.append((n, folder, h5, fh, w))
    return outs


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.make_isic_scale", __doc__.splitlines()[0], Options))


def _main(argv: list[str]) -> None:
    a = parse(argv, Options, "bench.make_isic_scale", suggest)[0]
    sizes = sorted(int(s) for s in a.sizes.split(","))
    rng = random.Random(a.seed)
    pool = load_sources(a.source)
    with contextlib.ExitStack() as stack:
        _fill(a, rng, pool, sizes, open_outputs(a.out, sizes, stack))


def _fill(a, rng, pool, sizes, outs) -> None:
    encoded = []
    t0 = time.time()
    for i in range(sizes[-1]):
        key = f"ISIC_{i:07d}"
        if i < a.unique:
            encoded.append(np.void(crop_jpeg(rng, pool, a.px)))
        data = encoded[i] if i < a.unique else encoded[rng.randrange(a.unique)]
        row = [key, int(rng.random() < a.positive_rate), f"IP_{rng.randrange(a.patients):07d}",
               rng.choice(range(20, 90, 5)), rng.choice(["male", "female"]),
               rng.choice(SITES), round(rng.uniform(1, 40), 3)]
        for n, _, h5, _, w in outs:
            if i < n:
                h5[key] = data
                w.writerow(row)
        if i % 20000 == 0:
            print(f"{i} images {time.time() - t0:.0f}s", flush=True)
    print(f"done {sizes} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
