"""HDF5 image stores as ISIC 2024 ships them (train-image.hdf5: one JPEG's bytes per isic_id, beside
train-metadata.csv; test-image.hdf5, test-metadata.csv and sample_submission.csv beside): a dataset
for training, read lazily by every file loader, scored by predict, with the screening figures."""
from __future__ import annotations

import csv
import io
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

h5py = pytest.importorskip("h5py")

from engine import predict  # noqa: E402
from engine.options.config import parse_args  # noqa: E402
from tests.helpers import tiny_args, train  # noqa: E402
from loaders import hdf5_store, images  # noqa: E402
from loaders.datasets import load_dataset  # noqa: E402

RUN = tiny_args("mlp", "--image-size", "16", "--data.workers", "1", "--run.plan", "off")


def _jpeg(seed: int, positive: bool) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(60, 120, (24, 24, 3), dtype=np.uint8)
    if positive:
        arr[6:18, 6:18] = (200, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _store(path: Path, ids: list[str], positives: set[str], as_array: bool = False) -> None:
    with h5py.File(path, "w") as fh:
        for i, key in enumerate(ids):
            data = _jpeg(i, key in positives)
            fh[key] = np.frombuffer(data, np.uint8) if as_array else np.void(data)


def isic_folder(root: Path, n: int = 60) -> Path:
    """The challenge's layout, in miniature: one positive in five, 12 patients, metadata columns."""
    root.mkdir(parents=True)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    positives = {k for i, k in enumerate(ids) if i % 5 == 0}
    _store(root / "train-image.hdf5", ids[:-1], positives)  # the last id is listed but not stored
    with open(root / "train-metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general", "tbp_lv_A"])
        for i, key in enumerate(ids):
            w.writerow([key, int(key in positives), f"IP_{i % 12:07d}", 40 + i % 30, "male", "torso", 0.5 * i])
    test_ids = ["ISIC_9000002", "ISIC_9000000", "ISIC_9000001"]
    _store(root / "test-image.hdf5", test_ids, {"ISIC_9000000"}, as_array=True)
    with open(root / "test-metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["isic_id", "patient_id", "age_approx", "sex"])
        w.writerows([[k, "IP_9", 50, "female"] for k in test_ids])
    (root / "sample_submission.csv").write_text("isic_id,target\n" + "".join(f"{k},0.3\n" for k in test_ids))
    return root


def test_the_training_pair_is_chosen_and_the_log_says_so(tmp_path, caplog):
    root = isic_folder(tmp_path / "isic")
    with caplog.at_level(logging.INFO, logger="medtrain.data"):
        ds = load_dataset(parse_args(["--data", str(root), "--data.workers", "1"]).config.data)
    assert "train-image.hdf5 with train-metadata.csv chosen for training" in caplog.text
    assert ds.classes == ["0", "1"] and len(ds.train) + len(ds.val) + len(ds.test) == 59
    assert all(hdf5_store.is_member(f) for f in ds.train.files)
    assert [r for p, r in ds.skipped] == ["'ISIC_0000059' is not a key of train-image.hdf5"]
    patients = [set(s.groups) for s in (ds.train, ds.val, ds.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_members_are_read_one_key_at_a_time_with_one_handle_per_thread(tmp_path):
    root = isic_folder(tmp_path / "isic", n=10)
    path = hdf5_store.member(root / "train-image.hdf5", "ISIC_0000003")
    assert images.read_bytes(path) == _jpeg(3, False)
    assert images.read_bytes(hdf5_store.member(root / "test-image.hdf5", "ISIC_9000000")) == _jpeg(1, True)
    handles = {}

    def grab(name):
        images.read_bytes(path)
        handles[name] = hdf5_store._open(str(root / "train-image.hdf5"))

    threads = [threading.Thread(target=grab, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handles["a"] is not handles["b"]
    assert hdf5_store._open(str(root / "train-image.hdf5")) is hdf5_store._open(str(root / "train-image.hdf5"))
    with pytest.raises(images.BadImage, match="no key 'nope'"):
        images.read_bytes(hdf5_store.member(root / "train-image.hdf5", "nope"))


def test_a_store_without_a_csv_is_refused_in_one_line(tmp_path):
    from common.errors import ConfigError
    root = tmp_path / "bare"
    root.mkdir()
    _store(root / "images.hdf5", ["a", "b"], set())
    with pytest.raises(ConfigError, match="no CSV of its ids and labels"):
        load_dataset(parse_args(["--data", str(root)]).config.data)


@pytest.fixture(scope="module")
def isic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hdf5")
    data = isic_folder(root / "isic")
    train(data, root / "run", RUN, report=False)  # figures are not under test here
    return data, root / "run"


def test_an_isic_folder_trains_a_binary_task_with_the_screening_figures(isic_run):
    _, run = isic_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["0", "1"]
    for key in ("test.pauc_tpr80", "test.sensitivity_at_specificity90", "test.specificity_at_sensitivity90"):
        assert 0.0 <= metrics[key] <= 1.0  # finite: the test split has both classes


def test_predict_on_the_challenge_folder_scores_the_test_store_by_isic_id(isic_run, tmp_path):
    data, run = isic_run
    out = tmp_path / "submission.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["ISIC_9000002", "ISIC_9000000", "ISIC_9000001"]  # the CSV's order
    direct = tmp_path / "direct.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(data / "test-image.hdf5"), "--out", str(direct)]) == 0
    with open(direct, newline="") as fh:
        assert sorted(r["file"] for r in csv.DictReader(fh)) == sorted(r["file"] for r in rows)


@pytest.mark.parametrize("backend", ["plain", "tensor", "baseline", "nvjpeg", "dali", "ffcv"])
def test_every_file_loader_reads_store_members(isic_run, backend, tmp_path, monkeypatch):
    import importlib.util

    import torch

    from engine.options.resolve import loader_spec
    from loaders import base
    module = {"dali": "nvidia.dali", "ffcv": "ffcv"}.get(backend)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")
    monkeypatch.setenv("MEDTRAIN_CACHE", str(tmp_path / "cache"))
    data, _ = isic_run
    cfg = parse_args(["--data", str(data), "--batch-size", "4", "--device", "cpu", "--data.workers", "2",
                      "--image-size", "16"]).config
    ds = load_dataset(cfg.data)
    loader = base.build_loader(backend, ds, "test", loader_spec(cfg), torch.device("cpu"), train=False)
    batches = list(loader)
    seen = sum(int((y >= 0).sum()) for _, y, *rest in batches)
    assert seen == len(ds.test) and all(torch.isfinite(x.float()).all() for x, *_ in batches)


def test_a_large_store_checks_a_sample_first_and_the_rest_as_decoded(tmp_path, monkeypatch, caplog):
    import torch

    from engine.options.resolve import loader_spec
    from loaders import base, datasets
    root = isic_folder(tmp_path / "isic")
    with h5py.File(root / "train-image.hdf5", "a") as fh:
        del fh["ISIC_0000007"]
        fh["ISIC_0000007"] = np.void(_jpeg(7, False)[:200])  # cut short: no end-of-image marker
    monkeypatch.setattr(datasets, "STORE_SAMPLE", 10)
    with caplog.at_level(logging.INFO, logger="medtrain.data"):
        ds = load_dataset(parse_args(["--data", str(root), "--data.workers", "1", "--data.val_fraction", "0",
                                      "--data.test_fraction", "0"]).config.data)
    assert "headers of a 10-image sample checked" in caplog.text
    cut = hdf5_store.member((root / "train-image.hdf5").resolve(), "ISIC_0000007")
    if cut in ds.train.files:  # not in the sample: found when the loader decodes it, listed as skipped
        cfg = parse_args(["--data", str(root), "--batch-size", "8", "--device", "cpu", "--data.workers", "1"]).config
        loader = base.build_loader("plain", ds, "train", loader_spec(cfg), torch.device("cpu"), train=False)
        list(loader)
        assert "truncated" in loader.bad.items[cut].lower()  # the decoder's own words
    else:
        assert dict(ds.skipped)[cut].startswith("truncated JPEG")
    full = load_dataset(parse_args(["--data", str(root), "--data.verify", "full", "--data.workers", "1"]).config.data)
    assert dict(full.skipped)[cut].startswith("truncated JPEG")


def test_a_stray_h5_beside_a_labelled_folder_is_not_a_store(tmp_path):
    root = tmp_path / "data"
    for i in range(12):
        label = "pos" if i % 2 else "neg"
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.jpg").write_bytes(_jpeg(i, label == "pos"))
    with h5py.File(root / "model_weights.h5", "w") as fh:  # Keras weights, say
        fh["dense/kernel"] = np.zeros((4, 4), np.float32)
    ds = load_dataset(parse_args(["--data", str(root), "--data.workers", "1"]).config.data)
    assert ds.classes == ["neg", "pos"] and not any(hdf5_store.is_member(f) for f in ds.train.files)
