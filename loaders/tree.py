"""Reading a folder tree: class-per-folder, or predefined splits above the classes.

- `root/<class>/...`: every image below a class folder (nested subfolders too) has that
  class; the folder name is the label, NFC-normalized and stripped (`nv ` is `nv`).
- `root/train/<class>/`, `root/val|valid|validation|dev/<class>/`, `root/test|testing/<class>/`
  (the ImageFolder/Kaggle layout): the folders are the predefined splits, the classes come
  from inside them. A split folder holding images but no class folders (Kaggle's unlabelled
  `test/`) is reported and not used. Split and class folders mixed at the top are refused.
- Hidden and system entries are ignored at every depth (loaders/filetypes.py); files that
  are not an image type the decoder reads, and images outside any class folder, are listed
  as skipped with their reason; an empty class folder is a warning naming it.
- Folders that are ids, not classes, are refused with one line naming what to give instead:
  many "classes" of one to three images each (patients, lesions, studies), or nested
  `patient/study/view.jpg` folders (CheXpert's layout), where the label lives in a CSV.
- Symlinks are followed (a tree is built by its owner); one file reached twice (two links,
  or a link beside its target) is kept once, so it can never sit in train and test at once.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from common.errors import ConfigError
from loaders import filetypes
from loaders import labels as label_rules
from loaders.csv_table import SPLIT_VALUES, Listing

log = logging.getLogger("medtrain.data")


def visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not filetypes.is_hidden(p.name))


def _walk(folder: Path):
    """Every visible file below `folder`, symlinked folders followed once (no cycles)."""
    seen_dirs = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not filetypes.is_hidden(d))
        for name in sorted(files):
            if not filetypes.is_hidden(name):
                yield Path(current) / name


def list_images(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(every image below `folder`, [(path, reason)] for the other files): an unlabelled folder."""
    files, skipped = [], []
    for f in _walk(folder):
        if not filetypes.is_image_name(f.name):
            skipped.append((str(f), filetypes.not_image_reason(f.name)))
        elif not f.exists():
            skipped.append((str(f), "broken symbolic link"))
        else:
            files.append(str(f.resolve()))
    return files, skipped


def _read_classes(folder: Path, listing: Listing, part: str | None, seen: dict[str, str]) -> int:
    """Add every image of every class folder in `folder`; the number of class folders."""
    classes = 0
    for entry in visible_children(folder):
        if not entry.is_dir():
            listing.skipped.append((str(entry), "not in a class folder" if filetypes.is_image_name(entry.name)
                                    else filetypes.not_image_reason(entry.name)))
            continue
        classes += 1
        label = label_rules.normalize(entry.name)
        found = 0
        for f in _walk(entry):
            if not filetypes.is_image_name(f.name):
                listing.skipped.append((str(f), filetypes.not_image_reason(f.name)))
                continue
            if not f.exists():
                listing.skipped.append((str(f), "broken symbolic link"))
                continue
            real = str(f.resolve())
            if real in seen:
                listing.skipped.append((str(f), f"same file as {seen[real]} (kept once)"))
                continue
            seen[real] = str(f)
            listing.files.append(real)
            listing.labels.append(label)
            if listing.parts is not None:
                listing.parts.append(part)
            found += 1
        if not found:
            log.warning("class folder %s holds no image: not a class%s", entry,
                        f" in {part}" if part else "")
    return classes


def split_folders(root: Path) -> dict[str, Path]:
    """{train|val|test: folder} when the top of `root` is split folders, else {}; mixed is refused."""
    dirs = [p for p in visible_children(root) if p.is_dir()]
    parts = {p: SPLIT_VALUES.get(label_rules.clean_text(p.name).lower()) for p in dirs}
    named = {p: s for p, s in parts.items() if s}
    if not named:
        return {}
    others = [p.name for p, s in parts.items() if not s]
    if others:
        raise ConfigError(f"{root}: mixes split folders ({', '.join(sorted(p.name for p in named))}) with other "
                          f"folders ({', '.join(others[:5])}); expected either split folders train/val/test with "
                          "class folders inside, or class folders only")
    result = {}
    for p, s in named.items():
        if s in result:
            raise ConfigError(f"{root}: folders {result[s].name} and {p.name} are both the {s} split; keep one")
        result[s] = p
    return result


ID_CLASSES = 10          # at least this many "classes" of ...
ID_MEDIAN_IMAGES = 3     # ... at most this many images each (median) are ids when named or nested like ids
MANY_CLASSES = 50        # this many of that size are ids whatever their names


def _id_like(name: str) -> bool:
    """patient00001, ISIC_0012345, 2019-0042: three digits or more (class numbers 0..9 are not ids)."""
    return sum(ch.isdigit() for ch in name) >= 3


def _refuse_id_folders(root: Path, listing: Listing) -> None:
    """Classes that are patients or studies would train a model to name patients: refused."""
    counts = Counter(listing.labels)
    if len(counts) < ID_CLASSES or sorted(counts.values())[len(counts) // 2] > ID_MEDIAN_IMAGES:
        return
    nested = sum(Path(f).parent.name != lab for f, lab in zip(listing.files, listing.labels)) > len(listing.files) / 2
    id_named = sum(map(_id_like, counts)) > 0.9 * len(counts)
    if len(counts) < MANY_CLASSES and not nested and not id_named:
        return
    median = sorted(counts.values())[len(counts) // 2]
    example = os.path.relpath(listing.files[0], root)
    tables = sorted(p.name for p in list(root.glob("*.csv")) + list(root.parent.glob("*.csv")))
    hint = f"; a CSV nearby may hold them ({', '.join(tables[:3])})" if tables else ""
    raise ConfigError(f"{root}: {len(counts)} folders with a median of {median} image(s) each (e.g. {example}) look "
                      f"like patient/study ids, not classes; give the labels as a CSV of file,label beside the "
                      f"images and --data that CSV{hint}")


def read_tree(root: Path) -> Listing:
    splits = split_folders(root)
    seen: dict[str, str] = {}
    if not splits:
        listing = Listing([], [], source=f"class folders in {root.name}")
        _read_classes(root, listing, None, seen)
        _refuse_id_folders(root, listing)
        return listing
    listing = Listing([], [], parts=[], source=f"split folders {', '.join(p.name for p in splits.values())} "
                                               "with class folders inside")
    for part, folder in sorted(splits.items(), key=lambda kv: ("train", "val", "test").index(kv[0])):
        before = len(listing.skipped)
        if _read_classes(folder, listing, part, seen) == 0:
            loose = sum(1 for _ in _walk(folder))
            del listing.skipped[before:]
            listing.skipped.append((str(folder), f"{part} folder has no class folders ({loose} unlabelled "
                                                 "file(s)): not used"))
    _refuse_id_folders(root, listing)
    if "train" not in set(listing.parts):
        raise ConfigError(f"{root}: split folders found ({', '.join(p.name for p in splits.values())}) but no "
                          "labelled train folder; expected train/<class>/ images")
    return listing
