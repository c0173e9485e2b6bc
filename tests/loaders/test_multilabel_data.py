"""Multi-label findings detected from the data: npz N x K, multi-hot 0/1 columns, '|'-separated
cells; ambiguous and malformed inputs refused with one line; grouped, stratified splits; the
sampler keeping rare findings present."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import ConfigError
from loaders import multilabel, splits
from loaders.base import make_sampler
from loaders.datasets import load_dataset
from loaders.spec import DataSpec, SamplerSpec
from multilabel_testdata import NAMES, findings, learnable_images, write_csv_dataset

def spec(path, **kw) -> DataSpec:
    return DataSpec(path=str(path), workers=1, **kw)


# ----------------------------------------------------------------------------- detection

def test_npz_n_by_k_labels_are_findings(tmp_path):
    y = findings(120)
    path = tmp_path / "chestmnist_like.npz"
    np.savez(path, train_images=learnable_images(y), train_labels=y)
    ds = load_dataset(spec(path))
    assert ds.multilabel and ds.num_classes == 4
    assert ds.train.labels.dtype == np.float32 and ds.train.labels.shape[1] == 4
    assert len(ds.train) + len(ds.val) + len(ds.test) == 120


def test_chestmnist_npz_gets_its_finding_names(tmp_path):
    y = findings(60, prevalence=[0.3] * 14)
    path = tmp_path / "chestmnist.npz"
    x = learnable_images(y)
    np.savez(path, train_images=x[:40], train_labels=y[:40], val_images=x[40:50], val_labels=y[40:50],
             test_images=x[50:], test_labels=y[50:])
    ds = load_dataset(spec(path))
    assert ds.classes == multilabel.KNOWN_NPZ_FINDINGS["chest"] and ds.official_split


def test_npz_matrix_of_other_values_is_refused_in_one_line(tmp_path):
    path = tmp_path / "odd.npz"
    y = findings(30)
    y[3, 1] = 2
    np.savez(path, train_images=learnable_images(y), train_labels=y)
    with pytest.raises(ConfigError, match=r"train_labels has shape \(30, 4\) but holds 2.*only 0 and 1") as err:
        load_dataset(spec(path))
    assert "\n" not in str(err.value)


def test_multi_hot_columns_are_findings_and_all_zero_rows_mean_no_finding(tmp_path):
    y = findings(60)
    ds = load_dataset(spec(write_csv_dataset(tmp_path / "d", y, "columns")))
    assert ds.multilabel and ds.classes == NAMES
    total = sum(len(ds.split(s)) for s in ("train", "val", "test"))
    assert total == 60  # rows without a finding are kept, not skipped
    every = np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])
    assert every.sum() == y.sum() and (every.sum(1) == 0).sum() == (y.sum(1) == 0).sum()


def test_one_hot_columns_stay_one_class_per_image(tmp_path):
    """A CSV whose 0/1 columns never have two 1s in a row is multi-class, as before."""
    y = np.eye(3, dtype=np.uint8)[np.arange(30) % 3]
    root = tmp_path / "onehot"
    root.mkdir()
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "MEL", "NV", "BCC"])
        for i in range(30):
            Image.fromarray(np.full((8, 8, 3), 30 * (i % 3), np.uint8)).save(root / f"i{i}.png")
            w.writerow([f"i{i}.png"] + [int(v) for v in y[i]])
    ds = load_dataset(spec(root))
    assert not ds.multilabel and ds.train.labels.ndim == 1 and sorted(ds.classes) == ["BCC", "MEL", "NV"]


def test_separated_findings_with_no_finding(tmp_path):
    y = findings(60)
    ds = load_dataset(spec(write_csv_dataset(tmp_path / "d", y, "separated")))
    assert ds.multilabel and ds.classes == sorted(NAMES)
    every = np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])
    assert len(every) == 60 and every.sum() == y.sum()


def test_separated_cells_parse():
    assert multilabel.separated_findings(" Effusion|Infiltration ") == ("Effusion", "Infiltration")
    assert multilabel.separated_findings("No Finding") == ()
    assert multilabel.separated_findings("Mass|Mass") == ("Mass",)


def test_separated_column_beside_multi_hot_columns_is_refused_naming_them(tmp_path):
    root = tmp_path / "amb"
    root.mkdir()
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "Effusion", "Mass"])
        for i in range(6):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / f"i{i}.png")
            w.writerow([f"i{i}.png", "Effusion|Mass" if i % 2 else "No Finding", i % 2, i % 2])
    with pytest.raises(ConfigError, match=r"ambiguous labels: column 'label'.*'Effusion', 'Mass'") as err:
        load_dataset(spec(root))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- splits and sampler

def test_grouped_split_keeps_patients_apart_and_every_finding_in_each_part(tmp_path):
    y = findings(300, prevalence=(0.5, 0.3, 0.15, 0.08))
    ds = load_dataset(spec(write_csv_dataset(tmp_path / "d", y, "columns")))
    parts = {s: set(ds.split(s).groups) for s in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    for s in ("train", "val", "test"):
        assert (ds.split(s).labels.sum(0) > 0).all(), s  # the rarest finding too


def test_stratify_key_is_the_rarest_positive_finding():
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]])
    # counts: 3, 1, 2 -> rarest of {0,2} is 2; {0} -> 0; none -> 3; {0,1} -> 1; {2} -> 2
    assert multilabel.stratify_key(y).tolist() == [2, 0, 3, 1, 2]
    tr, va, te = splits.train_val_test(np.tile(y, (20, 1)), None, 0.2, 0.2, seed=0)
    assert len(tr) + len(va) + len(te) == 100


def test_balanced_sampler_draws_the_rare_finding_more_often():
    y = findings(2000, prevalence=(0.5, 0.3, 0.1, 0.02)).astype(np.float32)
    ds = type("D", (), {"train": type("S", (), {"labels": y})(), "num_classes": 4})()
    drawn = {}
    for kind in ("uniform", "balanced"):
        sampler = make_sampler(ds, SamplerSpec(batch_size=50, kind=kind, alpha=1.0), torch.device("cpu"))
        order = sampler.epoch_indices(0).numpy()
        drawn[kind] = y[order].mean(0)
    assert drawn["balanced"][3] > 3 * drawn["uniform"][3]  # the 2% finding
    assert drawn["balanced"][3] > 0.1


def test_ham_multilabel_task_reads_as_grouped_findings(tmp_path, ham_dir):
    """bench/multilabel_ham.py: real images, real findings (mel, bkl) and a synthetic one."""
    from bench.multilabel_ham import write_task
    ds = load_dataset(spec(write_task(ham_dir, tmp_path / "ham_ml", images=60, side=32)))
    assert ds.multilabel and ds.classes == ["mel", "bkl", "marker"] and ds.train.groups is not None
    every = np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])
    assert len(every) == 60 and (every[:, :2].sum(1) <= 1).all() and every[:, 2].any()
