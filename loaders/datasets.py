"""Dataset formats, detected from the path: MedMNIST npz, folder + CSV, class-per-folder, synthetic.

`load_dataset(spec, seed)` (a `loaders.spec.DataSpec`) returns a `Dataset` with train/val/test `Split`s. In-memory
datasets (npz) carry uint8 NHWC arrays; file datasets carry absolute paths, checked once
before training so a bad file is reported (path and reason) and dropped, never decoded
into the wrong label. Splits without an official partition are stratified and grouped.
"""
from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from loaders import images, splits, synthetic
from loaders.spec import DataSpec, default_workers

log = logging.getLogger("medtrain.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
FORMATS = "a MedMNIST .npz, a class-per-folder tree, a folder with a CSV of file,label[,group], or 'synthetic'"
FILE_COLUMNS = ("file", "filename", "image", "path", "image_id")
LABEL_COLUMNS = ("label", "dx", "class", "target", "diagnosis")
GROUP_COLUMNS = ("group", "lesion_id", "patient_id", "patient", "subject")
# Spreadsheet and pandas spellings of "no value": a label, never a class of its own.
MISSING_LABELS = ("nan", "na", "n/a", "none", "null", "?")
# MedMNIST npz files carry no class names; the ones we know are named here.
KNOWN_NPZ_CLASSES = {"derma": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]}


@dataclass
class Split:
    labels: np.ndarray                      # int64, one per sample
    files: list[str] | None = None          # absolute paths (file datasets)
    images: np.ndarray | None = None        # uint8 NHWC (in-memory datasets)
    groups: np.ndarray | None = None        # lesion/patient ids, when known
    meta: np.ndarray | None = None          # float32 tabular features (metadata fusion)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "Split":
        return Split(
            labels=self.labels[idx],
            files=[self.files[i] for i in idx] if self.files is not None else None,
            images=self.images[idx] if self.images is not None else None,
            groups=self.groups[idx] if self.groups is not None else None,
            meta=self.meta[idx] if self.meta is not None else None,
        )


@dataclass
class Dataset:
    name: str
    source: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    native_size: int                        # side of the stored images (decode size)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    official_split: bool = False            # val/test are the file's own (a MedMNIST benchmark's) partition

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


# ----------------------------------------------------------------------------- npz

def _load_npz(path: Path, cfg: DataSpec, seed: int) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # empty, truncated, not a zip, pickled: numpy raises many types
        raise ConfigError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc}); expected MedMNIST keys train_images, train_labels, ...") from None
    keys = set(data.files)
    needed = {"train_images", "train_labels"}
    if not needed <= keys:
        raise ConfigError(f"{path}: missing keys {sorted(needed - keys)}; expected MedMNIST keys "
                          "train_images/train_labels[/val_*/test_*]")
    split_keys = ("test_images", "test_labels", "val_images", "val_labels")
    official = [k for k in split_keys if k in keys]
    if official and len(official) < 4:  # half an official split: refuse rather than guess which half to trust
        absent = [k for k in split_keys if k not in keys]
        raise ConfigError(f"{path}: has {'/'.join(sorted(official))} but not {'/'.join(absent)}; give both val "
                          "and test splits or neither (then they are carved out of train)")

    def read(key):
        try:
            return data[key]
        except Exception as exc:  # object arrays (would need unpickling), CRC errors, truncated members
            raise ConfigError(f"{path}: {key} could not be read ({type(exc).__name__}: {exc})") from None

    def take(prefix):
        x, y = read(f"{prefix}_images"), read(f"{prefix}_labels")
        if x.dtype != np.uint8:
            raise ConfigError(f"{path}: {prefix}_images has dtype {x.dtype}; expected uint8")
        if x.ndim == 3:  # grayscale (N,H,W): repeat to RGB so every model takes 3 channels
            x = np.repeat(x[..., None], 3, axis=-1)
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[1] != x.shape[2]:
            raise ConfigError(f"{path}: {prefix}_images has shape {x.shape}; expected (N,H,W) or (N,H,W,3) square")
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        if len(x) == 0:
            raise ConfigError(f"{path}: {prefix}_images holds no images")
        shape = y.shape
        y = np.asarray(y).reshape(len(y), -1) if y.ndim else y
        if y.ndim != 2 or y.shape[1] != 1 or len(y) != len(x):
            raise ConfigError(f"{path}: {prefix}_labels has shape {shape}; "
                              f"expected ({len(x)},) or ({len(x)},1) single-label")
        if y.dtype.kind not in "iuf" and y.dtype != np.bool_:
            raise ConfigError(f"{path}: {prefix}_labels has dtype {y.dtype}; expected integers")
        if y.dtype.kind == "f":  # 1.0 is a label; 0.5 is a probability or a corrupt file, never a class
            odd = y[~np.isfinite(y) | (y != np.round(y))]
            if len(odd):
                raise ConfigError(f"{path}: {prefix}_labels holds non-integer values (e.g. {odd[0]}); "
                                  "expected class indices 0..C-1")
        return np.ascontiguousarray(x), y[:, 0].astype(np.int64)

    train_x, train_y = take("train")
    parts = {"train": (train_x, train_y)}
    if {"val_images", "val_labels", "test_images", "test_labels"} <= keys:
        parts["val"], parts["test"] = take("val"), take("test")
    else:  # no official split: carve one out of train
        tr, va, te = splits.train_val_test(train_y, None, cfg.val_fraction, cfg.test_fraction, seed)
        parts = {"train": (train_x[tr], train_y[tr]), "val": (train_x[va], train_y[va]), "test": (train_x[te], train_y[te])}
    all_y = np.concatenate([y for _, y in parts.values()])
    if all_y.min() < 0:
        raise ConfigError(f"{path}: negative labels found; expected 0..C-1")
    n_classes = int(all_y.max()) + 1
    known = next(((key, names) for key, names in KNOWN_NPZ_CLASSES.items() if key in path.name.lower()), None)
    if known and n_classes > len(known[1]):
        raise ConfigError(f"{path}: label {n_classes - 1} out of range; {known[0].capitalize()}MNIST has "
                          f"{len(known[1])} classes (0..{len(known[1]) - 1})")
    counts = np.bincount(all_y, minlength=n_classes)
    if not known and (counts == 0).any():  # a gap means a corrupt or re-coded label, not an empty class
        empty = np.flatnonzero(counts == 0)
        raise ConfigError(f"{path}: labels skip {len(empty)} of 0..{n_classes - 1} (e.g. {empty[0]}); "
                          "expected every class 0..C-1 to have at least one image")
    if (counts > 0).sum() < 2:
        raise ConfigError(f"{path}: only one class ({int(all_y[0])}) found; classification needs at least 2")
    classes = known[1] if known else [str(i) for i in range(n_classes)]
    made = {k: Split(labels=y, images=x) for k, (x, y) in parts.items()}
    return Dataset(path.stem, str(path), classes, made["train"], made["val"], made["test"],
                   native_size=int(train_x.shape[1]), official_split="val_images" in keys)


# ----------------------------------------------------------------------------- files

def _pick(header: list[str], names: tuple[str, ...], position: int | None) -> int | None:
    lower = [h.strip().lower() for h in header]
    for name in names:
        if name in lower:
            return lower.index(name)
    return position if position is not None and position < len(header) else None


def _read_csv(path: Path) -> list[list[str]]:
    """All rows; a CSV in another encoding or a binary file is one clear error, not a traceback."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel's byte-order mark is not a column name
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a readable CSV (contains NUL bytes: a binary file?)")
    try:
        return list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None


def _find_csv(root: Path) -> Path | None:
    preferred = root / "labels.csv"
    if preferred.exists():
        return preferred
    for candidate in sorted(root.glob("*.csv")):
        header = (_read_csv(candidate) or [[]])[0]
        if _pick(header, FILE_COLUMNS, None) is not None:
            return candidate
    return None


def _resolve_inside(root: Path, name: str, csv_path: Path, line: int) -> Path:
    """The file the CSV names, refusing paths that leave the data folder."""
    if os.path.isabs(name):
        raise ConfigError(f"{csv_path}:{line}: absolute path {name!r} not allowed; paths are relative to {root}")
    full = (root / name).resolve()
    if not full.is_relative_to(root.resolve()):
        raise ConfigError(f"{csv_path}:{line}: path {name!r} escapes the data folder {root}")
    if full.suffix == "" and (root / "images" / (name + ".jpg")).exists():  # HAM-style image_id
        full = (root / "images" / (name + ".jpg")).resolve()
    return full


def _rows_from_csv(root: Path, csv_path: Path) -> tuple[list[str], list[str], list[str] | None, list[tuple[str, str]]]:
    rows = _read_csv(csv_path)
    if not rows:
        raise ConfigError(f"{csv_path}: empty CSV; expected a header file,label[,group]")
    header, body, first_line = rows[0], rows[1:], 2
    known = FILE_COLUMNS + LABEL_COLUMNS + GROUP_COLUMNS
    if header and not any(h.strip().lower() in known for h in header) and _names_a_file(root, header[0]):
        # The first row is data: reading it as a header would silently drop one image.
        log.warning("%s has no header row: columns taken by position (file, label[, group])", csv_path.name)
        header, body, first_line = [""] * len(header), rows, 1
    fcol = _pick(header, FILE_COLUMNS, 0)
    lcol = _pick(header, LABEL_COLUMNS, 1)
    gcol = _pick(header, GROUP_COLUMNS, 2 if len(header) > 2 and header[2].strip().lower() not in ("",) else None)
    if lcol is None or fcol == lcol:
        raise ConfigError(f"{csv_path}: no label column; expected a header file,label[,group]")
    files, labels, groups, skipped, seen = [], [], [], [], {}
    images_dir = root / "images"
    for line, row in enumerate(body, start=first_line):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(fcol, lcol):
            skipped.append((f"{csv_path}:{line}", f"row has {len(row)} columns; expected at least {max(fcol, lcol) + 1}"))
            continue
        name, label = row[fcol].strip(), row[lcol].strip()
        if not label:
            skipped.append((f"{csv_path}:{line}", "empty label"))
            continue
        if label.lower() in MISSING_LABELS:
            skipped.append((f"{csv_path}:{line}", f"missing label ({label!r})"))
            continue
        path = _resolve_inside(root, name, csv_path, line)
        if not path.exists() and (images_dir / name).exists():
            path = (images_dir / name).resolve()
        if str(path) in seen:
            first_line_seen, first_label = seen[str(path)]
            if first_label != label:  # which one is right is the user's call, not ours
                raise ConfigError(f"{csv_path}:{line}: {name} is labelled {label!r} here but {first_label!r} "
                                  f"on line {first_line_seen}; fix the CSV")
            skipped.append((f"{csv_path}:{line}", f"duplicate row (first one kept): {name}"))
            continue
        seen[str(path)] = (line, label)
        if not path.exists():
            skipped.append((str(path), "listed in the CSV but missing"))
            continue
        files.append(str(path))
        labels.append(label)
        groups.append(row[gcol].strip() if gcol is not None and gcol < len(row) else "")
    has_groups = gcol is not None and any(groups)
    return files, labels, (groups if has_groups else None), skipped


def _names_a_file(root: Path, cell: str) -> bool:
    name = cell.strip()
    return bool(name) and not os.path.isabs(name) and ((root / name).is_file() or (root / "images" / name).is_file()
                                                       or (root / "images" / (name + ".jpg")).is_file())


def _rows_from_tree(root: Path) -> tuple[list[str], list[str], None, list]:
    files, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(f.resolve()))
                labels.append(class_dir.name)
    return files, labels, None, []


def _load_files(root: Path, cfg: DataSpec, seed: int, name: str) -> Dataset:
    csv_path = _find_csv(root)
    if csv_path is not None:
        files, labels, groups, skipped = _rows_from_csv(root, csv_path)
    elif any(p.is_dir() for p in root.iterdir()):
        files, labels, groups, skipped = _rows_from_tree(root)
    else:
        raise ConfigError(f"{root}: no CSV and no class folders; expected {FORMATS}")
    if not files and skipped:
        where, reason = skipped[0]
        raise ConfigError(f"{root}: none of the {len(skipped)} rows of {csv_path.name} is usable "
                          f"(e.g. {where}: {reason})")
    if not files:
        raise ConfigError(f"{root}: no usable images found; expected {FORMATS}")

    good, bad, first = images.scan(files, full=cfg.verify == "full", workers=max(2, default_workers(cfg.workers)))
    skipped += bad
    if not good:
        reason = Counter(r for _, r in bad).most_common(1)[0][0]
        example = next(p for p, r in bad if r == reason)
        raise ConfigError(f"{root}: all {len(files)} images are unreadable (e.g. {example}: {reason})")
    files = [files[i] for i in good]
    labels = [labels[i] for i in good]
    groups = [groups[i] for i in good] if groups is not None else None

    classes = sorted(set(labels))
    by_case = {}
    for c in classes:
        by_case.setdefault(c.lower(), []).append(c)
    clash = next((names for names in by_case.values() if len(names) > 1), None)
    if clash:  # "Mel" and "mel" as two classes would split one diagnosis in two
        raise ConfigError(f"{root}: labels {' and '.join(repr(c) for c in clash)} differ only in case; "
                          "use one spelling")
    if len(classes) < 2:
        raise ConfigError(f"{root}: only one class ({classes[0]!r}) found; classification needs at least 2")
    y = np.array([classes.index(c) for c in labels], np.int64)
    g = np.array(groups) if groups is not None else None
    all_split = Split(labels=y, files=files, groups=g)
    if cfg.max_samples and cfg.max_samples < len(y):
        keep, _, _ = splits.train_val_test(y, g, 0.0, 1.0 - cfg.max_samples / len(y), seed)
        all_split = all_split.subset(keep)
    tr, va, te = splits.train_val_test(all_split.labels, all_split.groups, cfg.val_fraction, cfg.test_fraction, seed)
    train = all_split.subset(tr)
    for i, c in enumerate(classes):
        if not np.any(train.labels == i):  # a stated decision: train anyway, but say what it means
            elsewhere = int(np.sum(all_split.labels[va] == i) + np.sum(all_split.labels[te] == i))
            log.warning("class %r has no training sample after the split (%d in val/test): the model cannot "
                        "learn it and its recall will be 0", c, elsewhere)
    h, w = first
    return Dataset(name, str(root), classes, train, all_split.subset(va), all_split.subset(te),
                   native_size=max(h, w), skipped=skipped)


# ----------------------------------------------------------------------------- entry

def load_dataset(cfg: DataSpec, seed: int = 0) -> Dataset:
    if cfg.path == "synthetic":
        root = synthetic.ensure_synthetic(cfg.synthetic_count, seed=0, cache_dir=cfg.cache_dir)
        ds = _load_files(root, cfg, seed, "synthetic")
    else:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise ConfigError(f"--data {cfg.path}: no such file or folder; expected {FORMATS}")
        if path.is_file() and path.suffix == ".npz":
            ds = _load_npz(path, cfg, seed)
        elif path.is_dir():
            ds = _load_files(path, cfg, seed, path.name)
        else:
            raise ConfigError(f"--data {cfg.path}: unsupported file type; expected {FORMATS}")
    if len(ds.train) == 0:  # tiny or few-group datasets: rounding can deal every group to val/test
        raise ConfigError(f"{ds.source}: the split left no training images ({len(ds.val)} val, {len(ds.test)} test); "
                          "lower --data.val_fraction/--data.test_fraction or add images")
    if ds.skipped:
        log.warning("skipped %d input(s): %s", len(ds.skipped), skip_summary(ds.skipped))
        for path, reason in ds.skipped[:20]:
            log.warning("  skipped %s: %s", path, reason)
        if len(ds.skipped) > 20:
            log.warning("  ... and %d more (all listed in data_skipped.json in the run folder)", len(ds.skipped) - 20)
    return ds


def skip_summary(skipped: list[tuple[str, str]], kinds: int = 5) -> str:
    """'3 truncated JPEG (no end-of-image marker); 1 empty file (0 bytes)': counts per kind of
    reason, the kind being the text before its details in parentheses."""
    groups: dict[str, list[str]] = {}
    for _, reason in skipped:
        groups.setdefault(reason.split(" (")[0], []).append(reason)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    parts = [f"{len(rs)} {rs[0] if len(set(rs)) == 1 else kind}" for kind, rs in ranked[:kinds]]
    if len(ranked) > kinds:
        parts.append(f"{sum(len(rs) for _, rs in ranked[kinds:])} for {len(ranked) - kinds} other reason(s)")
    return "; ".join(parts)


def with_splits(ds: Dataset, train: Split, val: Split, test: Split) -> Dataset:
    return replace(ds, train=train, val=val, test=test, official_split=False)  # new splits: not the file's own
