"""Metadata fusion: CSV columns joined on the image id, encoded, row-aligned with images, trained."""
import csv
import json

import numpy as np
import pytest
import torch

from engine.options.config import ConfigError, parse_args
from engine.run.loop import Trainer
from engine.train import main
from loaders import base as loaders
from loaders.datasets import load_dataset
from loaders.tabular import MetaLoader, attach_metadata, encode_column, fit_column
from engine.options.resolve import loader_spec, sampler_spec
from models.metadata import MetadataFusion, fuse
from models.registry import build_model
from tests.helpers import write_jpegs


def _with_metadata(root, n):
    """HAM-style metadata CSV beside labels.csv: image_id without .jpg, gaps and an unseen category."""
    with open(root / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    sites = ["back", "face", "unknown", ""]
    with open(root / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "image_id", "age", "sex", "localization", "code"])
        for i, row in enumerate(rows):
            stem = row["file"].split("/")[-1][:-4]
            label = ["a", "b", "c"].index(row["label"])
            age = "" if i % 7 == 3 else str(30 + 5 * label)
            w.writerow([row["group"], stem, age, ["male", "female"][i % 2], sites[i % 4], str(label)])
    return root


@pytest.fixture
def meta_csv(tmp_path):
    return _with_metadata(write_jpegs(tmp_path / "meta", n=48), 48)


def test_numeric_column_is_standardized_with_a_missing_flag():
    enc = fit_column("age", ["20", "40", "", "unknown"])
    assert enc.kind == "numeric" and enc.mean == 30 and enc.std == 10
    out = encode_column(enc, ["50", "", "nan"])
    np.testing.assert_allclose(out, [[2, 0], [0, 1], [0, 1]])


def test_categorical_column_is_one_hot_and_unseen_counts_as_missing():
    enc = fit_column("sex", ["male", "Female", "", "male"])
    assert enc.kind == "categorical" and enc.vocab == ("female", "male")
    out = encode_column(enc, ["MALE", "other", "?"])
    np.testing.assert_array_equal(out, [[0, 1, 0], [0, 0, 1], [0, 0, 1]])


def test_attach_joins_on_image_id_and_fits_on_train(meta_csv):
    ds = load_dataset(parse_args(["--data", str(meta_csv)]).config.data)
    fused, names = attach_metadata(ds, "age,sex,localization")
    assert names[:2] == ["age", "age:missing"] and "sex=male" in names and "localization:missing" in names
    for split in (fused.train, fused.val, fused.test):
        assert split.meta.shape == (len(split), len(names)) and split.meta.dtype == np.float32
    # Standardization uses train rows only: train ages (flag 0) have mean 0.
    train_age = fused.train.meta[fused.train.meta[:, 1] == 0, 0]
    assert abs(train_age.mean()) < 1e-5


def test_meta_rows_line_up_with_labels_in_every_loader(meta_csv):
    cfg = parse_args(["--data", str(meta_csv), "--batch-size", "8", "--device", "cpu"]).config
    ds, _ = attach_metadata(load_dataset(cfg.data), "code")
    cpu = torch.device("cpu")
    for name in ("tensor", "plain"):
        sampler = loaders.make_sampler(ds, sampler_spec(cfg), cpu)
        for split, train in (("train", True), ("test", False)):
            loader = loaders.build_loader(name, ds, split, loader_spec(cfg), cpu, train=train, sampler=sampler if train else None)
            assert isinstance(loader, MetaLoader)
            enc = fit_column("code", [str(v) for v in ds.train.labels])
            for images, labels, meta in loader:
                real = labels >= 0
                decoded = (meta[:, 0] * enc.std + enc.mean).round().long()
                assert torch.equal(decoded[real], labels[real]), (name, split)
                assert images.shape[0] == meta.shape[0]


def test_fusion_wraps_every_registered_classifier():
    for name in ("seedcnn", "mlp", "resnet18", "efficientnet_b0"):
        model = fuse(build_model(name, 5, 28), meta_dim=6, num_classes=5)
        out = model(torch.randn(2, 3, 28, 28), torch.randn(2, 6))
        assert out.shape == (2, 5), name


def test_one_fused_training_step_moves_the_embedding(meta_csv):
    cfg = parse_args(["--data", str(meta_csv), "--batch-size", "8", "--device", "cpu", "--model", "seedcnn",
                      "--image-size", "32", "--model.metadata", "age,sex,localization"]).config
    ds, names = attach_metadata(load_dataset(cfg.data), cfg.model.metadata)
    cpu = torch.device("cpu")
    loader = loaders.build_loader("tensor", ds, "train", loader_spec(cfg), cpu, train=True, sampler=loaders.make_sampler(ds, sampler_spec(cfg), cpu))
    model = fuse(build_model("seedcnn", ds.num_classes, 32), len(names), ds.num_classes)
    trainer = Trainer(model, cfg, cpu, ds.num_classes, loader.steps)
    before = model.embed[0].weight.detach().clone()
    images, labels, meta = next(iter(loader))
    trainer.train_step(images, labels, meta)
    stats = trainer.read_accumulators()
    assert np.isfinite(stats["loss"]) and stats["seen"] == 8
    assert not torch.equal(before, model.embed[0].weight)


def test_cli_run_with_metadata_writes_metrics(meta_csv, tmp_path):
    out = tmp_path / "run"
    code = main(["--data", str(meta_csv), "--model", "seedcnn", "--image-size", "24", "--batch-size", "8",
                 "--epochs", "1", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
                 "--model.metadata", "age,sex,localization", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test.accuracy"] <= 1
    assert json.loads((out / "config.json").read_text())["model"]["metadata"] == "age,sex,localization"


def test_bad_metadata_requests_are_one_clear_error(meta_csv):
    ds = load_dataset(parse_args(["--data", str(meta_csv)]).config.data)
    with pytest.raises(ConfigError, match="no CSV .* has an id column and all of these columns"):
        attach_metadata(ds, "age,weight")
    with pytest.raises(ConfigError, match="comma-separated"):
        attach_metadata(ds, " , ")


def test_metadata_on_an_image_array_is_refused(dermamnist_npz):
    npz = load_dataset(parse_args(["--data", str(dermamnist_npz)]).config.data)
    with pytest.raises(ConfigError, match="needs a folder with a CSV"):
        attach_metadata(npz, "age")


def test_fused_model_is_a_metadata_fusion():
    assert isinstance(fuse(build_model("mlp", 3, 28), 4, 3), MetadataFusion)
