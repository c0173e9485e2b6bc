"""Folder trees and labels as people make them: split folders, hidden clutter, every image type,
labels that only look different."""
from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from loaders.datasets import load_dataset

from . import broken


def _fill(folder: Path, n: int, label: int = 0, ext: str = ".jpg", fmt: str = "JPEG", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"im{seed + i:03d}{ext}").write_bytes(broken.image_bytes(broken.rgb_array(32, label, seed + i), fmt))


def _load(path, **overrides):
    return load_dataset(broken.data_cfg(path, **overrides))


def _counts(ds) -> dict[str, dict[str, int]]:
    return {s: {c: int((ds.split(s).labels == i).sum()) for i, c in enumerate(ds.classes)} for s in ("train", "val", "test")}


@pytest.mark.parametrize("names", [("train", "val", "test"), ("train", "valid", "test"),
                                   ("train", "validation", "test"), ("Training", "Validation", "Testing")])
def test_split_folders_are_the_partition_and_classes_come_from_inside(tmp_path, names):
    for part, n in zip(names, (8, 3, 4)):
        for label, c in enumerate(("benign", "malignant")):
            _fill(tmp_path / part / c, n, label, seed=100 * label)
    ds = _load(tmp_path)
    assert ds.classes == ["benign", "malignant"]
    assert _counts(ds) == {"train": {"benign": 8, "malignant": 8}, "val": {"benign": 3, "malignant": 3},
                           "test": {"benign": 4, "malignant": 4}}


def test_train_and_test_folders_only_carve_val_out_of_train(tmp_path):
    for part, n in (("train", 20), ("test", 5)):
        for label, c in enumerate(("nv", "mel")):
            _fill(tmp_path / part / c, n, label, seed=100 * label)
    ds = _load(tmp_path, val_fraction=0.2)
    assert len(ds.test) == 10 and all("/test/" in f for f in ds.test.files)
    assert len(ds.val) > 0 and all("/train/" in f for f in ds.val.files + ds.train.files)


def test_kaggle_unlabelled_test_folder_is_reported_not_used(tmp_path):
    for label, c in enumerate(("cat", "dog")):
        _fill(tmp_path / "train" / c, 20, label, seed=100 * label)
    _fill(tmp_path / "test", 6)
    ds = _load(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds.test) > 0
    assert all("/train/" in f for s in ("train", "val", "test") for f in ds.split(s).files)
    assert [(Path(p).name, r) for p, r in ds.skipped] == [
        ("test", "test folder has no class folders (6 unlabelled file(s)): not used")]


def test_split_and_class_folders_mixed_are_refused(tmp_path):
    _fill(tmp_path / "train" / "a", 4)
    _fill(tmp_path / "b", 4)
    with pytest.raises(ConfigError, match=r"mixes split folders \(train\) with other folders \(b\)"):
        _load(tmp_path)


def test_hidden_and_system_entries_are_ignored_at_every_depth(tmp_path):
    for label, c in enumerate(("a", "b")):
        _fill(tmp_path / c, 10, label, seed=50 * label)
        _fill(tmp_path / c / ".thumbnails", 3, label, seed=50 * label)   # near-duplicates
        _fill(tmp_path / c / "@eaDir", 3, label, seed=50 * label)        # Synology
        (tmp_path / c / "._im000.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (tmp_path / c / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (tmp_path / c / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    _fill(tmp_path / "__MACOSX" / "a", 2)
    _fill(tmp_path / ".git" / "x", 2)
    _fill(tmp_path / "@eaDir", 2)
    ds = _load(tmp_path)
    files = [f for s in ("train", "val", "test") for f in ds.split(s).files]
    assert ds.classes == ["a", "b"] and len(files) == 20 and not ds.skipped
    assert not any(part.startswith((".", "@", "__")) for f in files for part in Path(f).relative_to(tmp_path).parts)


def test_every_image_type_is_used_and_other_files_are_listed(tmp_path):
    types = {".jpg": "JPEG", ".JPG": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG",
             ".PNG": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF"}
    for label, c in enumerate(("a", "b")):
        for k, (ext, fmt) in enumerate(types.items()):
            _fill(tmp_path / c, 1, label, ext=ext, fmt=fmt, seed=k)
        (tmp_path / c / "notes.txt").write_text("seen by Dr X")
        (tmp_path / c / "scan.dcm").write_bytes(b"\x00" * 128 + b"DICM")  # a DICOM preamble, no image
    ds = _load(tmp_path)
    used = sorted(Path(f).suffix for s in ("train", "val", "test") for f in ds.split(s).files)
    assert used == sorted(list(types) * 2)
    reasons = sorted({r for _, r in ds.skipped})
    # DICOM is an image type (loaders/dicom.py): this one is read and has no pixels
    assert reasons == ["DICOM without pixel data", "not an image type the decoder reads (.txt)"]
    assert len(ds.skipped) == 4


def test_empty_class_folder_is_a_warning_naming_it(tmp_path, caplog):
    _fill(tmp_path / "a", 6)
    _fill(tmp_path / "b", 6, 1)
    (tmp_path / "c" / ".thumbnails").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="medtrain.data"):
        ds = _load(tmp_path)
    assert ds.classes == ["a", "b"]
    assert f"class folder {tmp_path / 'c'} holds no image: not a class" in caplog.text


def test_nested_subfolders_belong_to_their_class(tmp_path):
    _fill(tmp_path / "a" / "clinic1", 4)
    _fill(tmp_path / "a" / "clinic2" / "2024", 4, seed=10)
    _fill(tmp_path / "b", 8, 1)
    ds = _load(tmp_path)
    assert sum(_counts(ds)[s]["a"] for s in ("train", "val", "test")) == 8


def test_symlinks_are_followed_and_one_file_is_kept_once(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "b"
    _fill(elsewhere, 6, 1)
    root = tmp_path / "data"
    _fill(root / "a", 6)
    (root / "b").symlink_to(elsewhere, target_is_directory=True)
    (root / "a" / "again.jpg").symlink_to(root / "a" / "im000.jpg")
    (root / "a" / "gone.jpg").symlink_to(root / "a" / "nothing.jpg")
    ds = _load(root)
    assert _counts(ds)["train"]["b"] + _counts(ds)["val"]["b"] + _counts(ds)["test"]["b"] == 6
    reasons = {Path(p).name: r for p, r in ds.skipped}
    assert reasons["gone.jpg"] == "broken symbolic link"
    assert sum("same file as" in r for r in reasons.values()) == 1  # the link and its target: kept once
    assert sum(_counts(ds)[s]["a"] for s in ("train", "val", "test")) == 6


def test_a_wrapper_folder_says_where_the_classes_are(tmp_path):
    _fill(tmp_path / "HAM10000" / "nv", 4)
    _fill(tmp_path / "HAM10000" / "mel", 4, 1)
    with pytest.raises(ConfigError, match=r"only one class \('HAM10000'\) found.*--data .*HAM10000\)"):
        _load(tmp_path)


# -- labels that only look different --------------------------------------------------------

def _csv(root: Path, labels: list[str], names: list[str] | None = None) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(labels):
        name = names[i] if names else f"im{i:03d}.jpg"
        (root / "images" / name).write_bytes(broken.jpeg(broken.rgb_array(32, i % 3, seed=i)))
        rows.append([f"images/{name}", label])
    broken.write_csv(root / "labels.csv", rows, ("file", "label"))
    return root


def test_numeric_labels_compare_and_sort_as_numbers(tmp_path):
    ds = _load(_csv(tmp_path, ["1", "1.0", " 01", "2", "2.0", "10", "10.00", "2", "1", "10"] * 2))
    assert ds.classes == ["1", "2", "10"]
    assert np.bincount(np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])).tolist() == [8, 6, 6]


def test_unicode_spellings_and_spaces_are_one_label(tmp_path):
    word = "n\u00e6vus-b\u00e9nin"
    nfd = unicodedata.normalize("NFD", word)
    ds = _load(_csv(tmp_path, [word, nfd, f" {word} ", "mel", "mel ", "mel"] * 3))
    assert ds.classes == ["mel", unicodedata.normalize("NFC", word)]


def test_folder_names_with_spaces_or_nfd_are_one_class(tmp_path):
    word = "b\u00e9nin"
    _fill(tmp_path / word, 4)
    _fill(tmp_path / unicodedata.normalize("NFD", word), 4, seed=10)
    _fill(tmp_path / "nv", 4, 1, seed=20)
    _fill(tmp_path / "nv ", 4, 1, seed=30)
    ds = _load(tmp_path)
    assert ds.classes == [word, "nv"]
    assert sum(_counts(ds)[s]["nv"] for s in ("train", "val", "test")) == 8


@pytest.mark.parametrize("csv_form, disk_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_file_names_match_whatever_the_unicode_form(tmp_path, csv_form, disk_form):
    names = [f"patient_{c}_{i}.jpg" for i, c in enumerate(["\u00e9", "\u00fc", "\u00f1"] * 4)]
    root = _csv(tmp_path, ["a", "b", "c"] * 4, [unicodedata.normalize(disk_form, n) for n in names])
    rows = [[f"images/{unicodedata.normalize(csv_form, n)}", "abc"[i % 3]] for i, n in enumerate(names)]
    broken.write_csv(root / "labels.csv", rows, ("file", "label"))
    ds = _load(root)
    assert not ds.skipped and sum(len(ds.split(s)) for s in ("train", "val", "test")) == 12


def test_labels_differing_only_by_case_stay_refused_after_normalizing(tmp_path):
    with pytest.raises(ConfigError, match=r"labels 'MEL' and 'mel' differ only in case"):
        _load(_csv(tmp_path, ["mel", "nv", " MEL", "nv"] * 3))
