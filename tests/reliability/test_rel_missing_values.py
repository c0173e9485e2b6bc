"""Spreadsheet no-values and identifiers: what a person reads as 'no value' or 'the same id'
is that to the engine too, in every label, group and split column (loaders/labels.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from loaders import labels as label_rules
from loaders.datasets import load_dataset

from . import broken

NO_VALUES = ["#N/A", "#VALUE!", "NA", "N/A", "null", "None", "-", "?", "", "NaN", "#REF!", " n/a "]


def _folder(tmp_path, rows, header):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for r in rows:
        (root / r[0]).write_bytes(broken.jpeg(broken.rgb_array(32, hash(r[1]) % 4, seed=len(r[0]))))
    broken.write_csv(root / "labels.csv", rows, header)
    return root


def _load(root, **kw):
    return load_dataset(broken.data_cfg(root, **kw))


@pytest.mark.parametrize("spelling", NO_VALUES)
def test_no_value_spelling_is_missing_in_a_label_column(tmp_path, spelling):
    rows = [[f"images/im{i:03d}.jpg", "ab"[i % 2]] for i in range(20)] + [["images/x.jpg", spelling]]
    ds = _load(_folder(tmp_path, rows, ("file", "label")))
    assert ds.classes == ["a", "b"]
    assert len(ds.skipped) == 1 and ("missing label" in ds.skipped[0][1] or ds.skipped[0][1] == "empty label")


@pytest.mark.parametrize("spelling", ["#N/A", "NA", "-", "?", "null"])
def test_no_value_in_a_split_column_is_missing_not_an_unknown_part(tmp_path, spelling):
    parts = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    rows = [[f"images/im{i:03d}.jpg", "ab"[i % 2], parts[i]] for i in range(20)] + [["images/x.jpg", "a", spelling]]
    ds = _load(_folder(tmp_path, rows, ("file", "label", "split")))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 4, 4)
    assert ds.skipped[0][1] in (f"missing split value ({spelling!r})", "empty split value")


def test_inner_whitespace_is_one_label(tmp_path):
    rows = [[f"images/im{i:03d}.jpg", ["seborrheic keratosis", "seborrheic  keratosis", "nv", "seborrheic\tkeratosis"][i % 4]]
            for i in range(20)]
    assert _load(_folder(tmp_path, rows, ("file", "label"))).classes == ["nv", "seborrheic keratosis"]


@pytest.mark.parametrize("a,b", [("1017", "1017.0"), ("P01", "p01"), (" lesion 7", "lesion  7"), ("0042", "42")])
def test_group_spellings_of_one_id_are_one_group(a, b):
    assert label_rules.group_id(a) == label_rules.group_id(b)


def test_long_numeric_ids_stay_distinct():
    assert label_rules.group_id("12345678901234567890") != label_rules.group_id("12345678901234567891")


def _groups_per_part(ds):
    return [set(ds.split(p).groups.tolist()) for p in ("train", "val", "test")]


def test_float_spelled_patient_ids_never_straddle_splits(tmp_path):
    # a pandas float column writes some ids 1017.0 and others 1017: one patient
    rows = [[f"images/im{i:03d}.jpg", "ab"[(i // 3) % 2], f"{1000 + i // 3}" + (".0" if i % 2 else "")]
            for i in range(60)]
    ds = _load(_folder(tmp_path, rows, ("file", "label", "patient_id")), val_fraction=0.2, test_fraction=0.2)
    tr, va, te = _groups_per_part(ds)
    assert not (tr & va or tr & te or va & te)
    assert len(tr | va | te) == 20


@pytest.mark.parametrize("spelling", ["", "#N/A", "NA", "nan"])
def test_empty_group_cells_are_each_their_own_group_and_logged(tmp_path, caplog, spelling):
    # 60% of rows without a lesion id, as in ISIC metadata: not one giant lesion
    rows = [[f"images/im{i:03d}.jpg", "ab"[i % 2], spelling if i % 5 < 3 else f"L{i // 10}"] for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="medtrain.data"):
        ds = _load(_folder(tmp_path, rows, ("file", "label", "lesion_id")), val_fraction=0.2, test_fraction=0.2)
    assert "30 of 50 images (60%) have no 'lesion_id': each is its own group" in caplog.text
    sizes = [len(ds.train), len(ds.val), len(ds.test)]
    assert abs(sizes[2] - 10) <= 3 and abs(sizes[1] - 10) <= 3, sizes  # the requested fractions, not one giant group
    tr, va, te = _groups_per_part(ds)
    assert not (tr & va or tr & te or va & te)


def test_missing_values_in_metadata_columns():
    from loaders.tabular import encode_column, fit_column
    enc = fit_column("age", ["40", "#N/A", "55", "-", "#VALUE!"])
    assert enc.kind == "numeric"
    out = encode_column(enc, ["#N/A", "40"])
    assert out[0, -1] == 1.0 and out[1, -1] == 0.0
    assert np.isclose(enc.mean, 47.5)
