"""MedMNIST-style .npz files with missing keys, wrong shapes or dtypes, out-of-range labels:
each one clear error naming the file and what was expected."""
from __future__ import annotations

import numpy as np
import pytest

from engine.options.config import ConfigError
from loaders.datasets import load_dataset

from . import broken, cli_in_process


def _arrays(n=30, size=8, classes=3, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for part, count in (("train", n), ("val", n // 3), ("test", n // 3)):
        out[f"{part}_images"] = rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8)
        out[f"{part}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    return out


def _load(tmp_path, name="data.npz", **changes):
    arrays = _arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / name
    np.savez(path, **arrays)
    return load_dataset(broken.data_cfg(path))


def test_a_well_formed_npz_loads(tmp_path):
    ds = _load(tmp_path)
    assert ds.classes == ["0", "1", "2"] and (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 10)


def test_missing_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.npz: missing keys \['train_labels'\]; expected MedMNIST keys"):
        _load(tmp_path, train_labels=None)


def test_val_without_test_is_not_silently_ignored(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.npz: has val_images/val_labels but not test_images/test_labels"):
        _load(tmp_path, test_images=None, test_labels=None)


def test_float_images(tmp_path):
    with pytest.raises(ConfigError, match=r"train_images has dtype float32; expected uint8"):
        _load(tmp_path, train_images=np.zeros((30, 8, 8, 3), np.float32))


@pytest.mark.parametrize("shape", [(30, 8, 8, 4), (30, 8, 6, 3), (30, 64)])
def test_wrong_image_shapes(tmp_path, shape):
    with pytest.raises(ConfigError, match=r"train_images has shape \(.*\); expected \(N,H,W\) or \(N,H,W,3\) square"):
        _load(tmp_path, train_images=np.zeros(shape, np.uint8))


def test_labels_not_matching_image_count(tmp_path):
    with pytest.raises(ConfigError, match=r"train_labels has shape \(29, 1\); expected \(30,\) or \(30,1\) single-label"):
        _load(tmp_path, train_labels=np.zeros((29, 1), np.uint8))


def test_multi_label_matrix(tmp_path):
    """N x K 0/1 labels are multi-label findings (loaders/multilabel.py); in train only, refused."""
    with pytest.raises(ConfigError, match=r"label widths differ between parts \(train 3, val 1, test 1\)"):
        _load(tmp_path, train_labels=np.zeros((30, 3), np.uint8))
    y = lambda n: (np.arange(n * 3).reshape(n, 3) % 2).astype(np.uint8)  # noqa: E731
    ds = _load(tmp_path, train_labels=y(30), val_labels=y(10), test_labels=y(10))
    assert ds.multilabel and ds.num_classes == 3


def test_negative_labels(tmp_path):
    labels = (np.arange(30) % 3).astype(np.int64)
    labels[5] = -1
    with pytest.raises(ConfigError, match=r"negative labels found; expected 0\.\.C-1"):
        _load(tmp_path, train_labels=labels)


def test_labels_beyond_a_known_class_list(tmp_path):
    # DermaMNIST has 7 classes: a label 7 is a corrupt file, not an eighth diagnosis.
    labels = (np.arange(30) % 7).astype(np.int64)
    labels[3] = 7
    with pytest.raises(ConfigError, match=r"dermamnist\.npz: label 7 out of range; DermaMNIST has 7 classes \(0\.\.6\)"):
        _load(tmp_path, name="dermamnist.npz", train_labels=labels)


def test_labels_with_gaps(tmp_path):
    labels = (np.arange(30) % 3).astype(np.int64)
    labels[labels == 2] = 1000
    with pytest.raises(ConfigError, match=r"labels skip 997 of 0\.\.1000 \(e\.g\. 3\); expected every class 0\.\.C-1"):
        _load(tmp_path, train_labels=labels)


def test_fractional_float_labels(tmp_path):
    labels = (np.arange(30) % 3).astype(np.float32)
    labels[0] = 0.5
    with pytest.raises(ConfigError, match=r"train_labels holds non-integer values \(e\.g\. 0\.5\)"):
        _load(tmp_path, train_labels=labels)


def test_integral_float_labels_are_accepted(tmp_path):
    ds = _load(tmp_path, train_labels=(np.arange(30) % 3).astype(np.float64))
    assert ds.train.labels.dtype == np.int64 and ds.classes == ["0", "1", "2"]


def test_single_class(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.npz: only one class \(0\) found; classification needs at least 2"):
        _load(tmp_path, train_labels=np.zeros(30, np.uint8), val_labels=np.zeros(10, np.uint8),
              test_labels=np.zeros(10, np.uint8))


def test_empty_train_split(tmp_path):
    with pytest.raises(ConfigError, match=r"train_images holds no images"):
        _load(tmp_path, train_images=np.zeros((0, 8, 8, 3), np.uint8), train_labels=np.zeros((0, 1), np.uint8))


def test_pickled_object_array_is_refused(tmp_path):
    # allow_pickle=False: an object array would need unpickling, which can run code.
    with pytest.raises(ConfigError, match=r"train_labels could not be read \(ValueError: Object arrays cannot be loaded "
                                          r"when allow_pickle=False\)"):
        _load(tmp_path, train_labels=np.array([object()] * 30, dtype=object))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", None])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is None:  # a real npz cut short by an interrupted copy
        np.savez(path, **_arrays())
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"bad\.npz: not a readable \.npz \(.*\); expected MedMNIST keys"):
        load_dataset(broken.data_cfg(path))


def test_npz_from_the_cli(tmp_path, capsys):
    # in-process: a data refusal under a real `python -m engine.train` is test_rel_images.py's test_every_file_bad_from_the_cli
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip at all")
    line = broken.error_line(cli_in_process.run_cli(capsys, ["--data", path, "--out", tmp_path / "run", "--device", "cpu"]))
    assert line.startswith(f"error: {path}: not a readable .npz (")
