"""Multi-label findings in the engine: the metrics equal scikit-learn's, the loss masks padded
rows, the step never syncs, and three kinds of data train, report and predict end to end."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from engine.run import loop
from engine.score import multilabel_metrics
from engine.options.config import Config
from engine.evaluate import main as evaluate_main
from engine.run.loop import Trainer
from engine.run.multilabel import finding_loss
from engine.predict import main as predict_main
from engine.train import main as train_main
from tests.helpers import skip_figures, skip_report
from models.registry import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loaders"))
from multilabel_testdata import NAMES, findings, learnable_images, write_csv_dataset  # noqa: E402

K = 4


def scores(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = findings(n, seed)
    p = np.clip(0.35 * y + rng.random((n, K)) * 0.65, 0, 1)
    p = np.round(p, 2)  # ties, which sklearn's definitions handle by averaging
    return p, y


# ----------------------------------------------------------------------------- metrics vs sklearn

def test_summary_equals_sklearn():
    p, y = scores()
    thresholds = [0.5, 0.4, 0.6, 0.55]
    m = multilabel_metrics.summarize_findings(torch.tensor(p), torch.tensor(y, dtype=torch.float32),
                                              NAMES, thresholds)
    pred = (p >= np.asarray(thresholds)).astype(int)
    aucs = skm.roc_auc_score(y, p, average=None)
    aps = skm.average_precision_score(y, p, average=None)
    for k, name in enumerate(NAMES):
        assert m[f"auc.{name}"] == pytest.approx(aucs[k], abs=1e-12)
        assert m[f"ap.{name}"] == pytest.approx(aps[k], abs=1e-12)
        assert m[f"balanced_accuracy.{name}"] == pytest.approx(skm.balanced_accuracy_score(y[:, k], pred[:, k]))
        assert m[f"sensitivity.{name}"] == pytest.approx(skm.recall_score(y[:, k], pred[:, k]))
    assert m["auc_macro"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"), abs=1e-12)
    assert m["map"] == pytest.approx(skm.average_precision_score(y, p, average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))  # exact match
    assert m["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([skm.balanced_accuracy_score(y[:, k], pred[:, k])
                                                            for k in range(K)]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y.ravel(), p.ravel()), rel=1e-6)
    assert np.array_equal(np.array(m["confusion"]), skm.multilabel_confusion_matrix(y, pred))


def test_bootstrap_interval_brackets_the_figure():
    p, y = scores(200, seed=3)
    m = multilabel_metrics.summarize_findings(torch.tensor(p), torch.tensor(y, dtype=torch.float32),
                                              NAMES, None, bootstrap=200)
    assert m["auc_macro_ci_low"] < m["auc_macro"] < m["auc_macro_ci_high"]
    assert m["balanced_accuracy_ci_low"] < m["balanced_accuracy"] < m["balanced_accuracy_ci_high"]


@pytest.mark.parametrize("rule", ["youden", "f1", "half"])
def test_thresholds_chosen_per_finding_as_sklearn_curves_say(rule):
    p, y = scores(seed=1)
    got = multilabel_metrics.fit_thresholds(torch.tensor(p), torch.tensor(y), rule)
    for k in range(K):
        if rule == "half":
            assert got[k] == 0.5
            continue
        if rule == "youden":
            fpr, tpr, thr = skm.roc_curve(y[:, k], p[:, k], drop_intermediate=False)
            best = np.max(tpr - fpr)
            # the chosen threshold reaches the best J (ties: the highest threshold)
            assert tpr[thr == got[k]] - fpr[thr == got[k]] == pytest.approx(best)
            assert got[k] == thr[1:][np.argmax((tpr - fpr)[1:])]
        else:
            best = max(skm.f1_score(y[:, k], p[:, k] >= t) for t in np.unique(p[:, k]))
            assert skm.f1_score(y[:, k], p[:, k] >= got[k]) == pytest.approx(best)


# ----------------------------------------------------------------------------- loss and step

def test_loss_masks_padded_rows_and_weights_positives():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, K, generator=g)
    labels = torch.tensor(findings(6, seed=2), dtype=torch.float32)
    weight = torch.tensor([1.0, 2.0, 4.0, 9.0])
    padded = labels.clone()
    padded[4:] = -1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:4], labels[:4], pos_weight=weight)
    assert finding_loss(logits, padded, weight).item() == pytest.approx(expected.item(), rel=1e-6)
    assert finding_loss(logits[:4], labels[:4], weight).item() == pytest.approx(expected.item(), rel=1e-6)


def multilabel_trainer() -> Trainer:
    torch.manual_seed(0)
    cfg = Config()
    cfg.train.epochs = 2
    cfg.train.mixup = 0.4
    cfg.train.ema = 0.9
    model = build_model("seedcnn", K, 16, dropout=0.1)
    return Trainer(model, cfg, torch.device("cpu"), K, steps_per_epoch=10,
                   pos_weight=torch.tensor([1.0, 2.0, 3.0, 4.0]), multilabel=True)


def ml_batch(seed: int):
    y = findings(8, seed).astype(np.float32)
    images = torch.tensor(learnable_images(y.astype(np.uint8), 16, seed)).permute(0, 3, 1, 2).float() / 255
    return images.contiguous(memory_format=torch.channels_last), torch.tensor(y)


def test_multilabel_step_never_reads_a_tensor_on_the_host():
    from test_engine_step import RefuseHostReads
    trainer = multilabel_trainer()
    trainer.train_step(*ml_batch(1))
    images, labels = ml_batch(2)
    labels[6:] = -1  # an undecodable row's mask
    with RefuseHostReads():
        trainer.train_step(images, labels)
    stats = trainer.read_accumulators()
    assert stats["seen"] == 8 + 6 and stats["nonfinite"] == 0


def test_train_counts_are_per_finding_balanced_accuracy():
    trainer = multilabel_trainer()
    trainer.cfg.train.mixup = 0.0
    trainer.mixer.enabled = False
    head = trainer.model[-1]
    with torch.no_grad():  # always say: finding 0 yes, the others no
        head.weight.zero_()
        head.bias.copy_(torch.tensor([50.0, -50.0, -50.0, -50.0]))
    trainer.lr_table.zero_()
    images, labels = ml_batch(4)
    trainer.train_step(images, labels)
    stats = trainer.read_accumulators()
    y, pred = labels.numpy().astype(int), np.tile([1, 0, 0, 0], (8, 1))
    present = [k for k in range(K) if 0 < y[:, k].sum() < 8]
    bal = [skm.recall_score(y[:, k], pred[:, k]) for k in range(K) if y[:, k].any()]
    bal += [skm.recall_score(1 - y[:, k], 1 - pred[:, k]) for k in range(K) if (1 - y[:, k]).any()]
    assert present and stats["balanced_accuracy"] == pytest.approx(np.mean(bal))
    assert stats["accuracy"] == pytest.approx(1 - skm.hamming_loss(y, pred))


# ----------------------------------------------------------------------------- end to end

BASE = ["--image-size", "16", "--batch-size", "24", "--model", "seedcnn", "--device", "cpu", "--wandb", "disabled",
        "--train.progress", "off", "--data.workers", "1", "--run.plan", "off", "--lr", "0.003"]
RUN = BASE + ["--epochs", "4"]


def npz_data(tmp_path: Path) -> Path:
    y = findings(360)
    path = tmp_path / "chestmnist_tiny.npz"
    np.savez(path, train_images=learnable_images(y), train_labels=y)
    return path


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run): one findings run on the npz, with its report, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("npz")
    data, out = npz_data(root), root / "run"
    assert train_main(["--data", str(data), "--out", str(out)] + RUN) == 0
    return data, out


@pytest.mark.parametrize("kind", ["npz", "columns", "separated"])
def test_findings_train_report_and_predict_one_column_each(tmp_path, kind, request):
    # The report reads only the run folder (metrics, saved predictions), the same for every kind of
    # data: its figures are drawn and checked on the npz run; the CSV kinds train without them.
    if kind == "npz":
        data, out = request.getfixturevalue("npz_run")
    else:
        data, out = write_csv_dataset(tmp_path / "data", findings(360), kind), tmp_path / "run"
        assert train_main(["--data", str(data), "--out", str(out), "--run.report", "false"] + RUN) == 0
    m = json.loads((out / "metrics.json").read_text())
    names = m["classes"]
    assert len(names) == K
    per = [m[f"test.auc.{c}"] for c in names]
    assert m["test.auc_macro"] == pytest.approx(np.mean(per))
    assert m["test.auc_macro"] > 0.8, m["test.auc_macro"]  # learnable squares, a few epochs
    assert {"test.map", "test.balanced_accuracy", "test.accuracy", "val.auc_macro"} <= set(m)
    assert all(0 < m[f"test.threshold.{c}"] < 1 for c in names)
    saved = np.load(out / "test_predictions.npz")
    assert m["test.auc_macro"] == pytest.approx(skm.roc_auc_score(saved["labels"], saved["probs"], average="macro"))
    if kind == "npz":
        assert {"roc_curves.png", "pr_curves.png", "README.md"} <= {p.name for p in (out / "report").iterdir()}
    else:
        assert not (out / "report").exists()  # --run.report false: nothing drawn
    pred = tmp_path / "pred.csv"
    assert predict_main(["--checkpoint", str(out), "--data", str(data), "--out", str(pred), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(pred)))
    assert len(rows) == 360
    assert [c for c in rows[0] if c.startswith("p_")] == [f"p_{c}" for c in names]
    assert [c for c in rows[0] if c.startswith("decision_")] == [f"decision_{c}" for c in names]
    test_rows = [r for r in rows if r["split"] == "test"]
    called = np.array([[int(r[f"decision_{c}"]) for c in names] for r in test_rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in test_rows])
    thresholds = np.array([m[f"test.threshold.{c}"] for c in names])
    assert np.array_equal(called, (probs >= thresholds - 1e-6).astype(int))
    if kind == "separated":  # new patients: a flat folder of images, no labels, same columns
        new = tmp_path / "new"
        new.mkdir()
        for name in ("img0.png", "img1.png", "img2.png"):
            (new / name).write_bytes((data / name).read_bytes())
        unl = tmp_path / "unl.csv"
        assert predict_main(["--checkpoint", str(out), "--data", str(new), "--out", str(unl), "--device", "cpu"]) == 0
        rows = list(csv.DictReader(open(unl)))
        assert len(rows) == 3 and {r["split"] for r in rows} == {"unlabelled"} and rows[0]["label"] == ""
        assert [c for c in rows[0] if c.startswith("decision_")] == [f"decision_{c}" for c in names]


def test_evaluate_writes_the_same_keys(npz_run, tmp_path, monkeypatch):
    skip_figures(monkeypatch)
    data, out = npz_run
    trained = json.loads((out / "metrics.json").read_text())
    ev = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(out), "--data", str(data), "--out", str(ev), "--device", "cpu"]) == 0
    got = json.loads((ev / "metrics.json").read_text())
    assert got["test.auc_macro"] == pytest.approx(trained["test.auc_macro"], abs=1e-6)
    assert got["test.map"] == pytest.approx(trained["test.map"], abs=1e-6)


def test_compiled_multilabel_run_compiles_train_and_eval_once_each(tmp_path, monkeypatch):
    compiled = []

    def counting_backend(gm, example_inputs):
        compiled.append("train" if torch.is_grad_enabled() else "eval")
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(loop, "COMPILE_BACKEND", counting_backend)
    skip_report(monkeypatch)
    data = npz_data(tmp_path)
    assert train_main(["--data", str(data), "--out", str(tmp_path / "run"), "--compile", "--epochs", "2"] + BASE) == 0
    assert sorted(compiled) == ["eval", "train"], compiled
    torch._dynamo.reset()


def test_plan_chooses_for_findings():
    from engine.plan.plan import imbalance
    chosen = imbalance({"multilabel": True, "imbalance_ratio": 25.0})
    assert chosen["train.select"] == "auc_macro" and chosen["sampler.kind"] == "balanced"
    assert not chosen["eval.posthoc_adjust"]


def test_tta_averages_each_findings_sigmoid():
    from engine.score.tta import TTA, dihedral_views
    torch.manual_seed(0)
    model = build_model("seedcnn", K, 16, dropout=0.0).eval()
    images, _ = ml_batch(5)
    with torch.no_grad():
        expected = torch.stack([model(v).sigmoid() for v in dihedral_views(images)]).mean(0)
        got = TTA(model, multilabel=True)(images).sigmoid()
    assert torch.allclose(got, expected, atol=1e-5)


def test_single_label_options_are_refused_in_one_line(tmp_path, capsys):
    data = npz_data(tmp_path)
    status = train_main(["--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                         "--optim.logit_adjust", "1.0"] + BASE)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("error: --optim.logit_adjust: for single-label classes") and "multi-label" in err[0]


def test_decision_calibrates_each_finding_then_picks_its_threshold_on_the_calibrated_scores():
    # Over-confident scores (logits x3) on finding 0, well calibrated on finding 1: the fitted
    # temperatures undo the first and keep the second, and evaluate/predict's scores are the
    # calibrated ones, so the stored thresholds are chosen on what they are applied to.
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(4000, 2, generator=gen)
    labels = (torch.rand(4000, 2, generator=gen) < truth.sigmoid()).float()
    probs = torch.stack([(3 * truth[:, 0]).sigmoid(), truth[:, 1].sigmoid()], 1)
    cfg = Config()
    decision = multilabel_metrics.fit_findings_decision(cfg, probs, labels)
    t0, t1 = decision["temperatures"]
    assert t0 == pytest.approx(3.0, rel=0.15) and t1 == pytest.approx(1.0, abs=0.15)
    calibrated = multilabel_metrics.calibrated_findings(probs, decision)
    assert decision["thresholds"] == multilabel_metrics.fit_thresholds(calibrated, labels, cfg.eval.finding_threshold)
    before = multilabel_metrics.summarize_findings(probs, labels, ["a", "b"])["log_loss"]
    after = multilabel_metrics.summarize_findings(calibrated, labels, ["a", "b"])["log_loss"]
    assert after < before
    cfg.eval.calibrate = False
    assert "temperatures" not in multilabel_metrics.fit_findings_decision(cfg, probs, labels)
