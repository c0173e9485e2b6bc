"""What data a run was trained on, so that a resume or a cv rerun on changed data is refused.

The identity of a file dataset is, per image (relative to the data folder): its split, its
label, its size and its modification time, plus the inputs that were skipped; of an array
dataset (npz), the SHA-256 of the file. Sizes and mtimes, not content hashes: stat-ing
10,000 files takes milliseconds, hashing them minutes. A copy that does not keep mtimes
(`cp -r` without `-p`) therefore reads as changed files: the refusal says so, and a new run
is the safe answer. Separately, `contents(ds)` records each image's content digest with its split,
so engine.evaluate recognises the run's own images under any path (a byte copy, the folder given
through its CSV) and never scores an image that trained or selected the model as if it were new:
hashing is paid once per run, not on every resume check. (engine/plan/fingerprint_data.py, where present, measures image statistics
for choosing options; this module only answers "is it the same data?".)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from common.errors import ConfigError

SPLITS = ("train", "val", "test")


def _relative(path: str, root: Path) -> str:
    # String prefix first: Path.relative_to costs ~20 us a call, 8 s over 400k images.
    prefix = str(root).rstrip("/") + "/"
    if path.startswith(prefix):
        return path[len(prefix):]
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(path: str | Path) -> str:
    """A content digest of one file (BLAKE2b, 128 bits): equal bytes, equal digest, whatever the path."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def contents(ds) -> dict[str, str]:
    """{content digest: split} of every image of a file dataset ({} for arrays: `of` has their SHA-256)."""
    if ds.train.files is None:
        return {}
    found = {}
    for split in SPLITS:
        for path in ds.split(split).files:
            try:
                found.setdefault(digest(path), split)
            except OSError:
                continue  # unreadable now: the loaders report it
    return found


def of(ds) -> dict:
    """The identity of a loaded `Dataset` (any object with source, classes, splits, skipped)."""
    source = Path(ds.source)
    identity = {"source": str(source.resolve()) if source.exists() else ds.source, "classes": list(ds.classes)}
    if ds.train.files is None:  # in-memory arrays: the file holds them all
        identity["sha256"] = sha256(source) if source.is_file() else ""
        identity["sizes"] = [len(ds.split(s)) for s in SPLITS]
        return identity
    root = source.resolve() if source.is_dir() else source.parent.resolve()
    rows, store_stats = [], {}
    for split in SPLITS:
        part = ds.split(split)
        for path, label in zip(part.files, part.labels.tolist()):
            # An HDF5 store member (`store.hdf5::key`) changes with its store: the store's stat.
            store = path.split("::", 1)[0] if "::" in path else None
            if store in store_stats:
                size, mtime = store_stats[store]
            else:
                try:
                    st = os.stat(store or path)
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, -1
                if store:
                    store_stats[store] = size, mtime
            name = "|".join(c for c, v in zip(ds.classes, label) if v) if isinstance(label, list) else ds.classes[label]
            rows.append([_relative(path, root), split, name, size, mtime])
    identity["files"] = rows
    identity["skipped"] = sorted(_relative(p, root) for p, _ in ds.skipped)
    return identity


def differences(before: dict, now: dict) -> str:
    """'' when the same data, else what changed in a few words."""
    if "sha256" in before or "sha256" in now:
        if before.get("sha256") != now.get("sha256"):
            return "the array file's contents changed (SHA-256 differs)"
        return "" if before.get("sizes") == now.get("sizes") else "its split sizes changed"
    old = {row[0]: row[1:] for row in before.get("files", [])}
    new = {row[0]: row[1:] for row in now.get("files", [])}
    added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    common = old.keys() & new.keys()
    changed = sum(old[f][2:] != new[f][2:] for f in common)
    relabelled = sum(old[f][1] != new[f][1] for f in common)
    moved = sum(old[f][0] != new[f][0] for f in common)
    parts = [f"{n} {what}" for n, what in ((added, "files added"), (removed, "files removed"),
                                           (changed, "files changed (size or modification time)"),
                                           (relabelled, "labels changed"),
                                           (moved, "images in another split"))
             if n]
    if before.get("classes") != now.get("classes"):
        parts.append(f"classes {before.get('classes')} -> {now.get('classes')}")
    if sorted(before.get("skipped", [])) != sorted(now.get("skipped", [])):
        parts.append("other inputs skipped as unreadable")
    return ", ".join(parts)


def check_same(before: dict | None, now: dict, what: str) -> None:
    """ConfigError (one line) when `now` is not the data `before` described."""
    if not before:
        return  # written before identities were stored: nothing to compare with
    diff = differences(before, now)
    if diff:
        raise ConfigError(f"{what}: the data changed since this run started ({diff}); continuing would mix "
                          "images across train/val/test; start a new run with another --out")
