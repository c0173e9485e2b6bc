import numpy as np
import pytest
from PIL import Image

from engine.options.config import ConfigError, DataConfig
from loaders import splits
from loaders.datasets import load_dataset
from loaders.synthetic import CLASSES, ensure_synthetic
from tests.helpers import write_jpegs


def _npz(path, gray=False, official=True, n=60):
    rng = np.random.default_rng(0)
    shape = (n, 28, 28) if gray else (n, 28, 28, 3)
    arrays = {"train_images": rng.integers(0, 255, shape, dtype=np.uint8), "train_labels": (np.arange(n) % 3)[:, None]}
    if official:
        for part in ("val", "test"):
            arrays[f"{part}_images"] = arrays["train_images"][:12]
            arrays[f"{part}_labels"] = arrays["train_labels"][:12]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("gray", [False, True])
def test_npz_rgb_and_grayscale_with_official_splits(tmp_path, gray):
    ds = load_dataset(DataConfig(path=str(_npz(tmp_path / "x.npz", gray=gray))))
    assert ds.train.images.shape == (60, 28, 28, 3) and ds.train.images.dtype == np.uint8
    assert len(ds.val) == 12 and len(ds.test) == 12 and ds.num_classes == 3 and ds.native_size == 28


def test_npz_without_official_split_is_split_here(tmp_path):
    ds = load_dataset(DataConfig(path=str(_npz(tmp_path / "x.npz", official=False, n=100))))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 100 and len(ds.val) > 0


def test_csv_folder_grouped_split_has_no_group_in_two_parts(tiny_csv):
    ds = load_dataset(DataConfig(path=str(tiny_csv), val_fraction=0.2, test_fraction=0.2))
    assert ds.classes == ["a", "b", "c"]
    parts = [set(ds.train.groups), set(ds.val.groups), set(ds.test.groups)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(ds.train) + len(ds.val) + len(ds.test) == 36


def test_class_per_folder_tree(tmp_path):
    for c in ("benign", "malignant"):
        (tmp_path / "tree" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 20), (i * 30, 10, 10)).save(tmp_path / "tree" / c / f"{i}.jpg")
    ds = load_dataset(DataConfig(path=str(tmp_path / "tree")))
    assert ds.classes == ["benign", "malignant"] and len(ds.train) + len(ds.val) + len(ds.test) == 12


def test_synthetic_is_deterministic_imbalanced_and_cached(tmp_path):
    a = ensure_synthetic(200, cache_dir=str(tmp_path / "a"))
    b = ensure_synthetic(200, cache_dir=str(tmp_path / "b"))
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    assert (a / "images" / "img_00007.jpg").read_bytes() == (b / "images" / "img_00007.jpg").read_bytes()
    labels = [line.split(",")[1] for line in (a / "labels.csv").read_text().splitlines()[1:]]
    counts = sorted((labels.count(c) for c in CLASSES), reverse=True)
    assert counts[0] > 0.45 * 200 and counts[-1] < 0.06 * 200  # one dominant, rare ones
    mtime = (a / "labels.csv").stat().st_mtime
    ensure_synthetic(200, cache_dir=str(tmp_path / "a"))
    assert (a / "labels.csv").stat().st_mtime == mtime


def test_splits_are_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [400, 50, 30, 20])
    tr, va, te = splits.train_val_test(labels, None, 0.2, 0.2, seed=3)
    for part in (va, te):
        assert np.allclose(np.bincount(labels[part], minlength=4) / len(part), [0.8, 0.1, 0.06, 0.04], atol=0.02)
    again = splits.train_val_test(labels, None, 0.2, 0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((tr, va, te), again))
    folds = splits.k_folds(labels, np.arange(len(labels)) // 3, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))


def test_missing_path_is_a_clear_error():
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_dataset(DataConfig(path="/definitely/not/here"))


def test_real_dermamnist(dermamnist_npz):
    ds = load_dataset(DataConfig(path=str(dermamnist_npz)))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7007, 1003, 2005)
    assert ds.classes[5] == "nv" and np.bincount(ds.train.labels)[5] == 4693


def test_real_ham10000_split_by_lesion(ham_dir):
    ds = load_dataset(DataConfig(path=str(ham_dir)))
    assert ds.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 5984 and not ds.skipped
    assert not set(ds.train.groups) & set(ds.test.groups)
    assert ds.native_size == 224
