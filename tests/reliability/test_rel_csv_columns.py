"""Label CSVs as people write them: columns read by what their header names, never by where
they stand; predefined splits, one-hot labels, Kaggle names and spreadsheet dialects."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from loaders.datasets import load_dataset

from . import broken

CLASSES = ("a", "b", "c")


def _images(root: Path, n: int = 30, folder: str = "images", ext: str = ".jpg", fmt: str = "JPEG") -> list[str]:
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{folder}/im{i:03d}{ext}"
        (root / name).write_bytes(broken.image_bytes(broken.rgb_array(32, i % 3, seed=i), fmt))
        names.append(name)
    return names


def _write(root: Path, lines: list[str], name: str = "labels.csv", newline: str = "\n", encoding: str = "utf-8"):
    (root / name).write_bytes((newline.join(lines) + newline).encode(encoding))
    return root


def _load(path, **overrides):
    return load_dataset(broken.data_cfg(path, **overrides))


def _labels(ds) -> dict[str, str]:
    return {Path(f).name: ds.classes[y] for part in (ds.train, ds.val, ds.test) for f, y in zip(part.files, part.labels)}


def _part_of(ds) -> dict[str, str]:
    return {Path(f).name: name for name in ("train", "val", "test") for f in ds.split(name).files}


@pytest.mark.parametrize("header, extra", [
    ("file,label,age", lambda i: str(20 + i)),
    ("file,label,sex", lambda i: ["male", "female"][i % 2]),
    ("file,label,localization", lambda i: ["back", "face", "trunk"][i % 3]),
    ("file,label,fold", lambda i: str(i % 5)),  # k-fold numbers are not train/val/test
    ("file,label,notes", lambda i: ""),
])
def test_a_third_column_that_is_not_a_group_never_decides_the_split(tmp_path, header, extra):
    names = _images(tmp_path)
    _write(tmp_path, [header] + [f"{n},{CLASSES[i % 3]},{extra(i)}" for i, n in enumerate(names)])
    ds = _load(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert ds.train.groups is None
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)


@pytest.mark.parametrize("index_header", ["", "Unnamed: 0"])
def test_pandas_index_column_is_ignored(tmp_path, index_header):
    names = _images(tmp_path)
    _write(tmp_path, [f"{index_header},file,dx"] + [f"{i},{n},{CLASSES[i % 3]}" for i, n in enumerate(names)])
    ds = _load(tmp_path)
    assert ds.classes == list(CLASSES) and len(_labels(ds)) == 30 and len(ds.val) > 0 and len(ds.test) > 0
    assert _labels(ds)["im004.jpg"] == "b"


@pytest.mark.parametrize("group_header", ["group", "lesion_id", "patient_id", "Patient ID", "subject", "patient"])
def test_group_columns_named_as_groups_keep_groups_together(tmp_path, group_header):
    names = _images(tmp_path, n=40)
    _write(tmp_path, [f"file,label,{group_header}"] + [f"{n},{CLASSES[i % 2]},p{i // 4}" for i, n in enumerate(names)])
    ds = _load(tmp_path, val_fraction=0.2, test_fraction=0.2)
    parts = [set(ds.split(s).groups) for s in ("train", "val", "test")]
    assert ds.train.groups is not None and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


@pytest.mark.parametrize("spelling", [("train", "val", "test"), ("training", "validation", "testing"),
                                      ("Train", "Valid", "Test"), ("train", "dev", "test")])
@pytest.mark.parametrize("column", ["split", "partition", "fold", "Set"])
def test_split_column_gives_the_predefined_partition(tmp_path, spelling, column):
    names = _images(tmp_path)
    want = {n.split("/")[-1]: ("train", "val", "test")[min(i // 10, 2)] for i, n in enumerate(names)}
    rows = [f"{n},{CLASSES[i % 3]},{spelling[min(i // 10, 2)]}" for i, n in enumerate(names)]
    _write(tmp_path, [f"file,label,{column}"] + rows)
    ds = _load(tmp_path)
    assert _part_of(ds) == want and ds.partition.startswith("predefined")


def test_split_column_without_val_carves_val_from_train_only(tmp_path):
    names = _images(tmp_path, n=40)
    rows = [f"{n},{CLASSES[i % 2]},{'test' if i >= 30 else 'train'}" for i, n in enumerate(names)]
    ds = _load(_write(tmp_path, ["file,label,split"] + rows), val_fraction=0.2)
    parts = _part_of(ds)
    assert sorted(n for n, p in parts.items() if p == "test") == [f"im{i:03d}.jpg" for i in range(30, 40)]
    assert len(ds.val) == 8 and all(int(n[2:5]) < 30 for n, p in parts.items() if p == "val")


def test_split_column_with_an_unknown_value_is_refused_with_its_line(tmp_path):
    names = _images(tmp_path, n=6)
    rows = [f"{n},{CLASSES[i % 2]},{'holdout' if i == 4 else 'train'}" for i, n in enumerate(names)]
    with pytest.raises(ConfigError, match=r"labels\.csv:6: split column 'split' has value 'holdout'; "
                                          r"expected train, val or test"):
        _load(_write(tmp_path, ["file,label,split"] + rows))


def test_headerless_csv_takes_only_file_and_label_by_position(tmp_path, caplog):
    names = _images(tmp_path)
    _write(tmp_path, [f"{n},{CLASSES[i % 3]},g{i // 10}" for i, n in enumerate(names)])
    with caplog.at_level(logging.WARNING, logger="medtrain.data"):
        ds = _load(tmp_path)
    assert ds.train.groups is None and len(_labels(ds)) == 30 and "no header row" in caplog.text


@pytest.mark.parametrize("one, zero", [("1.0", "0.0"), ("1", "0")])
def test_one_hot_csv_reads_one_label_per_row(tmp_path, one, zero):
    """ISIC ground truth: image id without extension, one 0/1 column per diagnosis, UNK never set."""
    _images(tmp_path, n=32)
    cols = ["MEL", "NV", "BKL", "UNK"]
    lines = ["image," + ",".join(cols)]
    for i in range(30):
        lines.append(f"im{i:03d}," + ",".join(one if c == i % 3 else zero for c in range(4)))
    lines.append("im031," + ",".join([zero] * 4))               # none
    ds = _load(_write(tmp_path, lines, name="ISIC_GroundTruth.csv"))
    assert ds.classes == ["BKL", "MEL", "NV"]
    assert _labels(ds)["im004.jpg"] == "NV" and len(_labels(ds)) == 30
    reasons = sorted(r for _, r in ds.skipped)
    assert reasons == ["one-hot row has 0 positives; expected exactly one"]
    # A row with two 1s makes the columns multi-label findings (loaders/multilabel.py), never one class.
    lines.insert(-1, "im030," + ",".join([one, one, zero, zero]))
    ds = _load(_write(tmp_path, lines, name="ISIC_GroundTruth.csv"))
    assert ds.multilabel and ds.classes == cols and not ds.skipped


@pytest.mark.parametrize("header, folder, ext, fmt, strip_ext", [
    ("image_name,target", "train", ".jpg", "JPEG", True),          # SIIM-ISIC melanoma
    ("id_code,diagnosis", "train_images", ".png", "PNG", True),     # APTOS
    ("image_id,label", "train_images", ".jpg", "JPEG", False),      # cassava
    ("id,label", "train", ".tif", "TIFF", True),                    # histopathologic cancer
    ("Image Index,Finding Labels,Patient ID", "images_001", ".png", "PNG", False),  # NIH chest X-ray
])
def test_kaggle_style_csvs(tmp_path, header, folder, ext, fmt, strip_ext):
    names = _images(tmp_path, n=30, folder=folder, ext=ext, fmt=fmt)
    rows = []
    for i, n in enumerate(names):
        cell = n.split("/")[-1]
        cell = cell.rsplit(".", 1)[0] if strip_ext else cell
        rows.append(",".join([cell, str(i % 2)] + ([f"p{i // 3}"] if header.count(",") == 2 else [])))
    ds = _load(_write(tmp_path, [header] + rows, name="train.csv"))
    assert ds.classes == ["0", "1"] and len(_labels(ds)) == 30 and not ds.skipped
    assert _labels(ds)[f"im007{ext}"] == "1"


def test_a_submission_template_beside_the_labels_is_not_a_label_csv(tmp_path):
    # issue 27: its label column holds one value; the listing with labels is used, not refused
    names = _images(tmp_path)
    _write(tmp_path, ["image_id,label"] + [f"{n},{CLASSES[i % 3]}" for i, n in enumerate(names)], name="train.csv")
    _write(tmp_path, ["image_id,label"] + [f"{n},a" for n in names], name="sample_submission.csv")
    ds = _load(tmp_path)
    assert ds.classes == list(CLASSES) and len(_labels(ds)) == 30
    ds = _load(tmp_path / "train.csv")
    assert ds.classes == list(CLASSES) and len(_labels(ds)) == 30


def test_several_label_csvs_naming_the_images_are_refused_and_the_hint_works(tmp_path):
    names = _images(tmp_path)
    _write(tmp_path, ["image_id,label"] + [f"{n},{CLASSES[i % 3]}" for i, n in enumerate(names)], name="a.csv")
    _write(tmp_path, ["image_id,label"] + [f"{n},{CLASSES[(i + 1) % 3]}" for i, n in enumerate(names)], name="b.csv")
    with pytest.raises(ConfigError, match=r"several CSVs with file and label columns \(a\.csv \(100% of rows name a "
                                          r"file here\), b\.csv \(100% of rows name a file here\)\); pass the one to "
                                          r"train on: --data \S+a\.csv") as err:
        _load(tmp_path)
    hinted = str(err.value).rsplit("--data ", 1)[1]
    assert _load(hinted).classes == list(CLASSES)


DIALECTS = {
    "windows line endings": dict(newline="\r\n"),
    "old mac line endings": dict(newline="\r"),
    "utf-8 byte-order mark": dict(encoding="utf-8-sig"),
    "utf-16 (Excel unicode text)": dict(encoding="utf-16", sep="\t"),
    "semicolons and decimal commas (Excel in Europe)": dict(sep=";", decimal=True),
    "tabs": dict(sep="\t"),
    "quoted fields": dict(quote=True),
    "trailing empty columns": dict(trailing=True),
}


@pytest.mark.parametrize("kind", sorted(DIALECTS))
def test_spreadsheet_dialects_read_the_same(tmp_path, kind):
    d = DIALECTS[kind]
    sep = d.get("sep", ",")
    names = _images(tmp_path)
    lines = [sep.join(["file", "label", "age"]) + (sep * 2 if d.get("trailing") else "")]
    for i, n in enumerate(names):
        cells = [n, CLASSES[i % 3], "45,5" if d.get("decimal") else "45"]
        if d.get("quote"):
            cells = [f'"{c}"' for c in cells]
        lines.append(sep.join(cells) + (sep * 2 if d.get("trailing") else ""))
    _write(tmp_path, lines, newline=d.get("newline", "\n"), encoding=d.get("encoding", "utf-8"))
    ds = _load(tmp_path)
    assert ds.classes == list(CLASSES) and len(_labels(ds)) == 30 and not ds.skipped
    assert _labels(ds)["im005.jpg"] == "c"


def test_file_names_with_commas_quotes_and_windows_separators(tmp_path):
    (tmp_path / "images").mkdir()
    rows = ["file,label"]
    for i in range(12):
        name = f"scan, left {i}.jpg"
        (tmp_path / "images" / name).write_bytes(broken.jpeg(broken.rgb_array(32, i % 2, seed=i)))
        rows.append(f'"images\\{name}",{"ab"[i % 2]}')
    ds = _load(_write(tmp_path, rows))
    assert len(_labels(ds)) == 12 and _labels(ds)["scan, left 3.jpg"] == "b"


def test_csv_without_a_file_column_names_what_it_found(tmp_path):
    _images(tmp_path, n=4)
    with pytest.raises(ConfigError, match=r"labels\.csv: no file column; expected a header file,label.*"
                                          r"found header 'foo,bar'"):
        _load(_write(tmp_path, ["foo,bar", "x,y"]))
