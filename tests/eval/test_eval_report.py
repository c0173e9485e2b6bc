"""The report is rebuilt from a run folder alone: every figure, the README table, the CLI."""
import json

import numpy as np
import torch
from PIL import Image

from engine import report
from engine.output import run_report
from common.atomic import append_jsonl, atomic_write_json
from engine.score.metrics import summarize
from kernels.confusion import confusion_matrix
from loaders.datasets import Split

CLASSES = ["akiec", "bcc", "nv"]


def fake_run(root, n=60, with_history=True):
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.choice(3, n, p=[0.2, 0.2, 0.6]))
    logits = torch.randn(n, 3, generator=torch.Generator().manual_seed(0)) + 2.0 * torch.eye(3)[labels]
    probs = logits.softmax(1)
    cm = confusion_matrix(labels, probs.argmax(1), 3)
    test = summarize(cm, probs, labels, CLASSES, bootstrap=200)
    metrics = {f"test.{k}": v for k, v in test.items()} | {f"val.{k}": v for k, v in test.items()}
    metrics |= {"classes": CLASSES, "model": "seedcnn", "epochs": 3, "image_size": 28}
    atomic_write_json(root / "metrics.json", metrics)
    if with_history:
        for epoch in range(3):
            append_jsonl(root / "history.jsonl", {"epoch": epoch, "train.loss": 1.0 - 0.2 * epoch,
                                                  "train.accuracy": 0.5 + 0.1 * epoch, "val.log_loss": 1.1 - 0.1 * epoch,
                                                  "val.accuracy": 0.5 + 0.05 * epoch, "val.balanced_accuracy": 0.4 + 0.1 * epoch,
                                                  "train.class_histogram": [20, 20, 20]})
    images = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
    split = Split(labels=labels.numpy(), images=images)
    run_report.save_test_outputs(root, probs, labels, split, {"train": [30, 30, 90], "val": [5, 5, 15], "test": cm.sum(1).tolist()},
                              uncalibrated=(2 * logits).softmax(1))  # an overconfident "before" for the diagram
    return probs, labels, images


def test_report_has_every_figure_and_the_metrics_table(tmp_path):
    probs, labels, images = fake_run(tmp_path)
    written = run_report.build_report(tmp_path)
    names = {p.name for p in written}
    assert names == set(run_report.FIGURES) | {"README.md"}
    for name in run_report.FIGURES:
        with Image.open(tmp_path / "report" / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn
    text = (tmp_path / "report" / "README.md").read_text()
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert f"{m['test.balanced_accuracy']:.4f} [{m['test.balanced_accuracy_ci_low']:.4f}" in text
    for name in CLASSES:
        assert f"| {name} |" in text
    for name in run_report.FIGURES:
        assert f"({name})" in text


def test_saved_errors_are_the_most_confident_wrong_predictions(tmp_path):
    probs, labels, images = fake_run(tmp_path)
    with np.load(tmp_path / run_report.PREDICTIONS) as saved:
        rows, thumbs = saved["error_rows"], saved["error_images"]
        assert np.array_equal(saved["labels"], labels.numpy())
        assert np.allclose(saved["probs"], probs.numpy())
    wrong = np.flatnonzero(probs.argmax(1).numpy() != labels.numpy())
    conf = probs.max(1).values.numpy()
    expected = wrong[np.argsort(-conf[wrong], kind="stable")][:run_report.ERRORS_SHOWN]
    assert np.array_equal(rows, expected)
    assert np.array_equal(thumbs, images[rows])


def test_file_datasets_get_decoded_thumbnails(tmp_path):
    from tests.helpers import write_jpegs
    root = write_jpegs(tmp_path / "data", n=6, size=40)
    files = sorted(str(p) for p in (root / "images").glob("*.jpg"))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    probs = torch.eye(3)[torch.tensor([1, 1, 2, 2, 1, 2])] * 0.9 + 0.1 / 3
    run_report.save_test_outputs(tmp_path, probs, labels, Split(labels=labels.numpy(), files=files), {})
    with np.load(tmp_path / run_report.PREDICTIONS) as saved:
        assert saved["error_images"].shape == (2, run_report.THUMBNAIL, run_report.THUMBNAIL, 3)
        assert saved["error_images"].mean() > 10
        assert list(saved["files"]) == files


def test_cli_refuses_a_non_run_folder(tmp_path, capsys):
    """One error line. The CLI redrawing a run folder: test_a_run_without_its_report_draws_it_later_
    from_the_folder; every figure drawn for a folder without history.jsonl (learning curves "not
    recorded"): test_eval_cli.py, on evaluate's folder."""
    assert report.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_a_run_without_its_report_draws_it_later_from_the_folder(tmp_path, capsys):
    from tests.helpers import tiny_args, train, write_jpegs
    run = train(write_jpegs(tmp_path / "data", n=30, size=32), tmp_path / "run", tiny_args("seedcnn", "--run.plan", "off"),
                report=False)
    assert (run / "metrics.json").exists() and (run / run_report.PREDICTIONS).exists()
    assert not (run / "report").exists() and not list(run.glob("saliency*"))  # no figures, no Grad-CAM sample
    assert report.main([str(run)]) == 0
    drawn = {p.name for p in (run / "report").glob("*.png")}
    assert set(run_report.FIGURES) <= drawn and "gradcam.png" not in drawn  # the sample is drawn at run end only
