"""`ffcv` backend and `.beton` writer.

    python -m loaders.ffcv write --data PATH --out FILE.beton [--max-res N] [--jpeg-quality Q]

writes any dataset `--data` accepts (all of its files, every split) to one `.beton` plus a
sidecar `FILE.beton.json` naming the source file of each row. JPEGs no larger than `--max-res`
are stored as their original bytes (no second lossy compression of a diagnostic image, and the
fastest write); others, or all of them when `--jpeg-quality Q` is given, are decoded, shrunk to
fit `--max-res` and re-encoded at quality Q (90 by default). Each file is fully decoded once
while writing: an unreadable one is reported (path and reason) and left out of the file.

`--loader ffcv` writes such a file once into the cache folder (keyed by the dataset's files)
and reads it with FFCV's JIT-compiled decoders: random-resized-crop fused into the decode and
horizontal flips in FFCV's workers; the uint8 batch moves to the device as channels_last,
where vertical flips, rot90 and colour jitter (the device augmentation with its crop switched
off, only when those are enabled) and normalization follow. Order: the engine's sampler decides
it every epoch (uniform = random, balanced = our weighted order, DDP shards) through a custom
FFCV TraversalOrder; FFCV's own QUASI_RANDOM is not used (it only pays off with
`os_cache=False` on datasets larger than memory). A row whose source file was left out of the
`.beton` stays in the split as a masked row (label -1), reported once: no shift.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import dataclasses
import hashlib
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path, atomic_write_bytes
from common.cli import expand_path, run_main, suggest
from common.options import like, opt, parse, usage
from common.errors import ConfigError
from kernels.augment import DeviceAugment
from loaders import hdf5_store, images
from loaders.base import PAD_LABEL, Loader, host_indices, row_mask
from loaders.cache import cache_root
from loaders.fork_safe import fork_safe_gc
from loaders.spec import DataSpec, LoaderSpec, default_workers

log = logging.getLogger("medtrain.loaders")
DEFAULT_QUALITY = 90


# ----------------------------------------------------------------------------- writing

def _jpeg_field_class():
    from ffcv.fields import RGBImageField
    from ffcv.fields.rgb_image import IMAGE_MODES

    class KeepJpegField(RGBImageField):
        """RGBImageField that stores already-fitting JPEG bytes as they are (mode 'jpg')."""

        def encode(self, destination, image, malloc):
            if isinstance(image, bytes):
                h, w = images.check_bytes(image)
                destination["mode"] = IMAGE_MODES["jpg"]
                destination["height"], destination["width"] = h, w
                destination["data_ptr"], storage = malloc(len(image))
                storage[:] = np.frombuffer(image, np.uint8)
                return
            super().encode(destination, image, malloc)

    return KeepJpegField


@contextmanager
def _registered_as_rgb_image(field_cls):
    # FFCV records a field's type by exact class; our subclass writes the same layout as
    # RGBImageField, so it is recorded as that (type id 2) and read back by FFCV's own class.
    from ffcv import types

    original = types.TYPE_ID_HANDLER[2]
    types.TYPE_ID_HANDLER[2] = field_cls
    try:
        yield
    finally:
        types.TYPE_ID_HANDLER[2] = original


class _Rows:
    """What FFCV's writer indexes: (image as bytes or HxWx3 uint8, label)."""

    def __init__(self, files, labels, max_res: int, quality: int | None):
        self.files, self.labels, self.max_res, self.quality = files, labels, max_res, quality

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        data = images.read_bytes(self.files[i])
        h, w = images.check_bytes(data)
        # FFCV's decoder ignores EXIF orientation: an oriented JPEG is stored upright as pixels.
        if (self.quality is None and data[:3] == b"\xff\xd8\xff" and max(h, w) <= self.max_res
                and images.jpeg_orientation(data) == 1):
            return data, stored_label(self.labels[i])
        return images.decode(data, None), stored_label(self.labels[i])


def stored_label(y) -> int:
    """The .beton's label field (training reads labels from the split, not from it): the class,
    or for multi-label findings their bitmask (the first 31)."""
    if np.ndim(y) == 0:
        return int(y)
    return int(sum(1 << int(k) for k in np.flatnonzero(np.asarray(y) > 0.5) if k < 31))


def _verified(files: list[str], workers: int, report: bool) -> tuple[list[int], list[tuple[str, str]]]:
    good, bad, _ = images.scan(files, full=True, workers=workers)
    for path, reason in bad if report else ():
        log.warning("leaving out %s: %s", path, reason)
    return good, bad


def write_beton(files: list[str], labels: np.ndarray, out: Path, max_res: int, quality: int | None,
                workers: int | None = None, source: str = "", report: bool = True) -> dict:
    """Write `files` to `out` (+ `out.json` sidecar); returns the sidecar's content.

    `report=False` leaves reporting the files left out to the caller (the loader reports
    each once, with the other backends' wording)."""
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    workers = default_workers(workers or 0)
    good, bad = _verified(files, workers, report)
    if not good:
        raise ConfigError(f"{source or out}: no readable image to write")
    kept = [files[i] for i in good]
    kept_labels = np.asarray(labels)[good]
    field_cls = _jpeg_field_class()
    image_field = field_cls(write_mode="jpg", max_resolution=max_res, jpeg_quality=quality or DEFAULT_QUALITY)
    sidecar = {"source": source, "files": kept, "labels": kept_labels.tolist(), "max_res": max_res,
               "jpeg_quality": quality, "skipped": [{"path": p, "reason": r} for p, r in bad]}
    # Per-process temporaries: two runs filling the same cache entry never mix their bytes; the
    # .beton appears only once complete, after its sidecar.
    with atomic_path(out) as partial, _registered_as_rgb_image(field_cls):
        writer = DatasetWriter(str(partial), {"image": image_field, "label": IntField()}, num_workers=workers)
        with fork_safe_gc():  # the writer forks its workers
            writer.from_indexed_dataset(_Rows(kept, kept_labels, max_res, quality), chunksize=64)
        atomic_write_bytes(Path(f"{out}.json"), lambda fh: fh.write(json.dumps(sidecar).encode()))
    return sidecar


def cached_beton(ds, opts: LoaderSpec) -> tuple[Path, dict]:
    """The dataset's `.beton` in the cache folder, written on first use."""
    files, labels = [], []
    for split in (ds.train, ds.val, ds.test):
        files += split.files
        labels += split.labels.tolist()
    order = np.argsort(files)
    files, labels = [files[i] for i in order], np.asarray(labels)[order]
    digest = hashlib.sha256()
    for f, y in zip(files, labels):
        st = os.stat(hdf5_store.stat_path(f))  # a store member changes with its store
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode())
    digest.update(f"max_res={ds.native_size}".encode())
    out = cache_root(opts.cache_dir) / "ffcv" / f"{ds.name}-{digest.hexdigest()[:16]}.beton"
    meta_path = Path(str(out) + ".json")
    if out.exists() and meta_path.exists():
        return out, json.loads(meta_path.read_text())
    log.info("writing %d images to %s (once; later runs reuse it)", len(files), out)
    return out, write_beton(files, labels, out, ds.native_size, None, opts.workers or None, ds.source, report=False)


# ----------------------------------------------------------------------------- reading

def _engine_order_class():
    from ffcv.traversal_order.base import TraversalOrder

    class EngineOrder(TraversalOrder):
        """The sample order our sampler chose for the epoch, as `.beton` row indices."""

        def __init__(self, loader, rows: np.ndarray):
            super().__init__(loader)
            self.rows = rows
            self.next: np.ndarray = rows

        def sample_order(self, epoch: int):
            return self.next

    return EngineOrder


class FfcvLoader(Loader):
    name = "ffcv"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.split.files is None:
            raise ConfigError("ffcv reads a .beton of files; in-memory datasets use the tensor loader")
        self.beton, meta = cached_beton(self.ds, self.opts)
        row_of = {f: r for r, f in enumerate(meta["files"])}
        skipped = {s["path"]: s["reason"] for s in meta["skipped"]}
        missing = [f not in row_of for f in self.split.files]
        for f, gone in zip(self.split.files, missing):
            if gone:
                self.bad.add(f, skipped.get(f, "not in the .beton"))
        # A file left out of the .beton stays a row (read as row 0, label masked to -1), so the
        # sampler's indices and every other label stay valid.
        self.rows = np.asarray([row_of.get(f, 0) for f in self.split.files], dtype=np.int64)
        self.missing = torch.as_tensor(missing, dtype=torch.bool, device=self.device)
        self.any_missing = any(missing)
        self.ffcv_loader = self._build()
        spec = self.spec
        self.post = None
        if spec.train and (spec.vflip or spec.rot90 or spec.jitter > 0):
            # FFCV already cropped and h-flipped: the device augmentation only adds the rest.
            rest = dataclasses.replace(spec, scale_min=1.0, ratio=(1.0, 1.0), hflip=False)
            self.post = DeviceAugment(rest, self.opts.seed, self.device)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(spec.mean, device=self.device).view(shape) * 255
        self.inv_std = 1 / (torch.tensor(spec.std, device=self.device).view(shape) * 255)

    def _build(self):
        from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader as FLoader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, ToDevice, ToTensor, ToTorchImage

        spec, size = self.spec, self.image_size
        if spec.train:
            ops = [RandomResizedCropRGBImageDecoder((size, size), scale=(spec.scale_min, 1.0), ratio=spec.ratio)]
            ops += [RandomHorizontalFlip()] if spec.hflip else []
        else:
            ops = [CenterCropRGBImageDecoder((size, size), ratio=spec.eval_crop)]
        ops += [ToTensor()]
        ops += [ToDevice(self.device, non_blocking=True)] if self.device.type == "cuda" else []
        ops += [ToTorchImage(channels_last=True)]
        loader = FLoader(str(self.beton), batch_size=self.batch_size, num_workers=self.workers,
                         order=OrderOption.SEQUENTIAL, indices=self.rows, os_cache=True, drop_last=False,
                         seed=self.opts.seed, pipelines={"image": ops, "label": None}, batches_ahead=2)
        # FFCV 1.0.2 cannot take a custom order in its constructor (it calls the instance):
        # install ours afterwards; the order array is set per epoch in __iter__.
        loader.traversal_order = _engine_order_class()(loader, self.rows)
        return loader

    def _finish(self, batch: torch.Tensor, key: int) -> torch.Tensor:
        if self.post is not None:
            return self.post(batch, key)
        x = (batch.float() - self.mean) * self.inv_std
        return x.to(self.spec.out_dtype).contiguous(memory_format=torch.channels_last)

    def __iter__(self):
        order, real = self.epoch_order()
        bs = self.batch_size
        positions = host_indices(order)[self.start_step * bs:self.steps * bs]
        rows = self.rows[positions]
        self.ffcv_loader.traversal_order.next = rows
        self.ffcv_loader.first_traversal_order = rows  # FFCV sizes the epoch from this
        step = self.start_step
        for (batch,) in self.ffcv_loader:
            labels = self.batch_labels(order, real, step)
            if self.any_missing:
                idx = order[step * bs:(step + 1) * bs]
                labels = torch.where(row_mask(self.missing[idx], labels), torch.full_like(labels, PAD_LABEL), labels)
            yield self._finish(batch, self.key(step)), labels
            step += 1
        self.start_step = 0


# ----------------------------------------------------------------------------- CLI

@dataclasses.dataclass
class WriteOptions:
    command: str = opt("", positional=True, required=True, choices=("write",), help="write: a dataset to a .beton")
    data: str = opt("", required=True, help="a folder + CSV, class-per-folder tree or 'synthetic'")
    out: str = opt("", required=True, help="the .beton to write")
    max_res: int = opt(0, ge=0, help="longest side stored; 0 = the dataset's native size")
    jpeg_quality: int = opt(-1, ge=1, le=100, help="re-encode every image at this quality; unset = keep fitting JPEGs")
    workers: int = like(DataSpec, "workers")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("loaders.ffcv", __doc__.split("\n\n")[1], WriteOptions,
                                               line="python -m loaders.ffcv write --data PATH --out FILE.beton [options]"))


def _main(argv: list[str]) -> int:
    args, given = parse(argv, WriteOptions, "loaders.ffcv", suggest)
    args.jpeg_quality = args.jpeg_quality if "jpeg_quality" in given else None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from loaders.datasets import load_dataset

    ds = load_dataset(DataSpec(path=expand_path(args.data), workers=args.workers))
    if ds.train.files is None:
        raise ConfigError(f"--data {args.data}: an in-memory array; the .beton writer takes image files")
    files = ds.train.files + ds.val.files + ds.test.files
    labels = np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])
    meta = write_beton(files, labels, Path(expand_path(args.out)), args.max_res or ds.native_size, args.jpeg_quality,
                       args.workers or None, ds.source)
    print(json.dumps({"out": args.out, "images": len(meta["files"]), "skipped": len(meta["skipped"]) + len(ds.skipped),
                      "bytes": os.path.getsize(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
