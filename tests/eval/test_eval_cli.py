"""engine.evaluate / engine.predict / engine.cv end to end on tiny data, and TTA itself."""
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from engine import cv, evaluate, predict
from engine.output import run_report
from engine.score.tta import TTA, dihedral_views
from engine.train import main as train_main
from tests.helpers import tiny_args, train, write_jpegs

TINY = tiny_args("mlp")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data, run): planned like a user's run (evaluate follows what the plan chose); no report
    figures, which no test here reads from the run."""
    root = tmp_path_factory.mktemp("eval")
    data = write_jpegs(root / "data", n=48, size=24)
    return data, train(data, root / "run", TINY, report=False)


def test_evaluate_reproduces_the_training_test_metrics(trained, tmp_path):
    data, run = trained
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(tmp_path)]) == 0
    train_m = json.loads((run / "metrics.json").read_text())
    eval_m = json.loads((tmp_path / "metrics.json").read_text())
    test_keys = [k for k in train_m if k.startswith("test.")]
    assert test_keys and set(test_keys) <= set(eval_m)
    for key in ("test.accuracy", "test.balanced_accuracy", "test.f1_macro", "test.auc_macro", "test.n"):
        assert eval_m[key] == pytest.approx(train_m[key], abs=1e-6), key
    # evaluate draws its report, and every figure of a report is drawn for a folder without a
    # history.jsonl (learning curves "not recorded"): test_eval_report.py relies on this
    assert not (tmp_path / "history.jsonl").exists() and (tmp_path / "report" / "README.md").exists()
    assert all((tmp_path / "report" / name).exists() for name in run_report.FIGURES)



def test_checkpoint_option_takes_the_checkpoint_file_too(trained, tmp_path, no_report_figures):
    """--checkpoint RUN/checkpoint.pt scores like --checkpoint RUN, and the default --out lands in RUN."""
    data, run = trained
    assert evaluate.main(["--checkpoint", str(run / "checkpoint.pt"), "--data", str(data), "--out", str(tmp_path)]) == 0
    assert no_report_figures == [tmp_path]
    train_m = json.loads((run / "metrics.json").read_text())
    eval_m = json.loads((tmp_path / "metrics.json").read_text())
    assert eval_m["test.accuracy"] == pytest.approx(train_m["test.accuracy"], abs=1e-6)
    assert eval_m["checkpoint"] == str(run)

def test_evaluate_with_tta_writes_the_same_keys(trained, tmp_path, no_report_figures):
    data, run = trained
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--tta", "--out", str(tmp_path)]) == 0
    assert no_report_figures == [tmp_path]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["tta"] is True and 0 <= m["test.accuracy"] <= 1 and 0 <= m["test.auc_macro"] <= 1
    assert "test.balanced_accuracy_ci_low" in m


def test_predict_writes_one_row_per_image_with_probabilities(trained, tmp_path):
    data, run = trained
    out = tmp_path / "p.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 48
    assert {r["file"] for r in rows} == {f"images/im{i:03d}.jpg" for i in range(48)}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for part in ("train", "val", "test"):
        indices = [int(r["index"]) for r in rows if r["split"] == part]
        assert indices == list(range(len(indices)))
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in ("a", "b", "c")]
        assert sum(probs) == pytest.approx(1, abs=1e-4)
        assert r["prediction"] == ("a", "b", "c")[int(np.argmax(probs))]
    labels = {f"images/im{i:03d}.jpg": ("a", "b", "c")[i % 3] for i in range(48)}
    assert all(r["label"] == labels[r["file"]] for r in rows)


def test_other_classes_are_refused_with_one_line_by_evaluate_and_predicted_by_predict(trained, tmp_path, capsys):
    _, run = trained
    other = write_jpegs(tmp_path / "other", n=12, size=24, classes=("x", "y", "z"))
    assert evaluate.main(["--checkpoint", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match the checkpoint's" in err[0]
    # prediction needs no labels (issue 27): every image gets a row, the labels it cannot use are ignored
    assert predict.main(["--checkpoint", str(run), "--data", str(other), "--out", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 13


def test_bad_options_are_one_line_errors(trained, capsys):
    data, run = trained
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--ttta"]) == 2
    assert "did you mean --tta" in capsys.readouterr().err
    assert evaluate.main(["--data", str(data)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", "x.txt"]) == 2
    assert ".csv" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(run / "nope"), "--data", str(data)]) == 2


def test_tta_views_are_the_eight_symmetries_and_tta_is_invariant_under_them():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = dihedral_views(x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert any(torch.equal(v, x.flip(2)) for v in views)  # vertical flip is among them
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()
    tta = TTA(model)
    with torch.no_grad():
        base = tta(x).softmax(1)
        assert torch.allclose(base.sum(1), torch.ones(2))
        for v in views:
            assert torch.allclose(tta(v.contiguous()).softmax(1), base, atol=1e-6)
        manual = torch.stack([model(v).softmax(1) for v in views]).mean(0)
        assert torch.allclose(base, manual, atol=1e-6)


def test_folds_are_disjoint_grouped_and_stratified(tmp_path):
    from loaders.datasets import load_dataset
    from engine.options.config import DataConfig
    data = write_jpegs(tmp_path / "d", n=60, size=24)
    ds = load_dataset(DataConfig(path=str(data)), seed=0)
    folds = cv.fold_datasets(ds, 3, 0.2, seed=0)
    tests = [set(f.test.files) for f in folds]
    every = set(ds.train.files) | set(ds.val.files) | set(ds.test.files)
    assert set().union(*tests) == every and sum(len(t) for t in tests) == len(every)
    for f in folds:
        parts = [set(f.train.groups), set(f.val.groups), set(f.test.groups)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert set(f.train.files) | set(f.val.files) | set(f.test.files) == every
        assert sorted(np.bincount(f.test.labels, minlength=3)) == sorted(np.bincount(folds[0].test.labels, minlength=3))


def test_cv_says_when_it_pools_the_datas_own_partition(tmp_path, caplog):
    rng = np.random.default_rng(0)
    arrays = {f"{part}_{kind}": (rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8) if kind == "images"
                                 else np.arange(n) % 2)
              for part, n in (("train", 16), ("val", 8), ("test", 8)) for kind in ("images", "labels")}
    np.savez(tmp_path / "bench.npz", **arrays)
    with caplog.at_level("WARNING", logger="medtrain.cv"):
        assert cv.main(["--folds", "2", "--data", str(tmp_path / "bench.npz"), "--out", str(tmp_path / "cv")] + TINY
                       + ["--run.plan", "off", "--run.report", "false"]) == 0  # the warning comes before any fold
    said = [r.getMessage() for r in caplog.records if r.name == "medtrain.cv"]
    assert any("own train/val/test partition" in m and "pools all 32 images" in m for m in said), said


def test_training_tta_and_metadata_models_are_reproduced_by_evaluate(tmp_path, no_report_figures):
    data = write_jpegs(tmp_path / "d", n=36, size=24)
    with open(data / "meta.csv", "w") as fh:  # HAM-style metadata joined on the image id, some ages missing
        fh.write("image_id,age,sex\n" + "".join(f"im{i:03d},{'' if i % 5 == 0 else 20 + i},{'mf'[i % 2]}\n" for i in range(36)))
    run = tmp_path / "run"
    assert train_main(["--data", str(data), "--out", str(run), "--tta", "--model.metadata", "age,sex", "--run.report", "false"]
                      + TINY) == 0
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--tta", "--out", str(tmp_path / "e")]) == 0
    assert no_report_figures == [tmp_path / "e"]
    train_m = json.loads((run / "metrics.json").read_text())
    eval_m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for key in ("test.accuracy", "test.auc_macro", "test.log_loss", "test.n"):
        assert eval_m[key] == pytest.approx(train_m[key], abs=1e-6), key
