"""Temperature scaling against a reference fit (scipy's bounded scalar search on the same NLL),
per-label temperatures on a multi-label logits matrix, argmax/accuracy unchanged, and the
order temperature -> prior correction -> threshold in the stored decision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss

from engine.score import decisions, temperature
from engine.options.config import Config
from engine.score.metrics import expected_calibration_error


def _overconfident(n=3000, classes=5, true_t=2.5, seed=0):
    """Logits whose labels are drawn at temperature `true_t`: the model is overconfident by it."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 3
    y = torch.distributions.Categorical(logits=z / true_t).sample()
    return z, y


def _reference(z: np.ndarray, y: np.ndarray) -> float:
    def nll(t):
        s = z / t
        s = s - s.max(1, keepdims=True)
        return -(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(1))).mean()
    return minimize_scalar(nll, bounds=(temperature.MIN_T, temperature.MAX_T), method="bounded",
                           options={"xatol": 1e-8}).x


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_scalar_fit_matches_scipy_on_the_same_nll(true_t):
    z, y = _overconfident(true_t=true_t, seed=int(true_t * 10))
    fitted = float(temperature.fit_temperature(z.softmax(1), y))
    assert fitted == pytest.approx(_reference(z.double().numpy(), y.numpy()), rel=1e-3)
    calibrated = temperature.apply(z.softmax(1), fitted)
    # the fitted probabilities reach the NLL minimum (sklearn's log loss as the second reference)
    norm = lambda q: (q.double() / q.double().sum(1, keepdim=True)).numpy()  # noqa: E731
    assert log_loss(y, norm(calibrated), labels=range(5)) <= log_loss(y, norm(z.softmax(1)), labels=range(5)) + 1e-9


def test_argmax_accuracy_and_balanced_accuracy_are_unchanged_and_ece_drops():
    z, y = _overconfident()
    p = z.softmax(1)
    t = temperature.fit_temperature(p[:1500], y[:1500])  # fitted on one half, judged on the other
    before, after = p[1500:], temperature.apply(p[1500:], t)
    assert torch.equal(before.argmax(1), after.argmax(1))
    assert accuracy_score(y[1500:], after.argmax(1)) == accuracy_score(y[1500:], before.argmax(1))
    assert balanced_accuracy_score(y[1500:], after.argmax(1)) == balanced_accuracy_score(y[1500:], before.argmax(1))
    assert float(expected_calibration_error(after, y[1500:])) < 0.5 * float(expected_calibration_error(before, y[1500:]))
    assert torch.allclose(after.sum(1), torch.ones(len(after)), atol=1e-5)


def test_probabilities_from_tta_give_the_same_temperature_as_the_logits():
    """Scores arrive as probabilities: log p differs from the logits by a per-row constant."""
    z, y = _overconfident(n=500)
    from_probs = temperature.fit_temperature(z.softmax(1), y)
    shifted = temperature.fit_temperature((z + torch.randn(500, 1) * 5).softmax(1), y)
    assert float(from_probs) == pytest.approx(float(shifted), rel=1e-4)


def test_multilabel_fits_one_temperature_per_label_each_matching_its_own_reference():
    g = torch.Generator().manual_seed(3)
    n, true_t = 4000, torch.tensor([0.5, 1.0, 2.0, 4.0])
    z = torch.randn(n, 4, generator=g) * 2
    y = (torch.rand(n, 4, generator=g) < (z / true_t).sigmoid()).long()
    fitted = temperature.fit_temperature(z.sigmoid(), y, multilabel=True)
    assert fitted.shape == (4,)
    zz, yy = z.double().numpy(), y.double().numpy()
    for j in range(4):
        def nll(t):
            s = zz[:, j] / t
            return np.mean(np.logaddexp(0, s) - yy[:, j] * s)
        ref = minimize_scalar(nll, bounds=(temperature.MIN_T, temperature.MAX_T), method="bounded",
                              options={"xatol": 1e-8}).x
        assert float(fitted[j]) == pytest.approx(ref, rel=1e-3)
    assert float(fitted[0]) < 1 < float(fitted[3])  # under- and overconfident labels move in opposite directions
    applied = temperature.apply(z.sigmoid(), fitted, multilabel=True)
    assert torch.equal(applied > 0.5, z.sigmoid() > 0.5)  # per label, the 0.5 decision is unchanged
    assert torch.allclose(applied[:, 1], z.sigmoid()[:, 1], atol=0.05 * 2)


def test_a_split_too_small_to_fit_keeps_one_and_one_changes_nothing():
    z, y = _overconfident(n=200)
    p = z.softmax(1)
    assert float(temperature.fit_temperature(p[:1], y[:1])) == 1.0
    assert temperature.apply(p, 1.0) is p


def _cfg(calibrate=True, posthoc=True, target=0.0):
    cfg = Config()
    cfg.eval.calibrate, cfg.eval.posthoc_adjust, cfg.eval.target_sensitivity = calibrate, posthoc, target
    cfg.train.select = "balanced_accuracy"
    return cfg


def test_the_decision_stores_the_temperature_and_chooses_tau_on_calibrated_scores():
    g = torch.Generator().manual_seed(5)
    counts = np.array([800, 150, 50])
    y = torch.tensor(np.repeat([0, 1, 2], counts // 2))
    z = torch.randn(len(y), 3, generator=g) * 1.5 + torch.nn.functional.one_hot(y, 3) * 2.0
    z = (z + torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)) * 3  # prior-shifted, overconfident
    p = z.softmax(1)
    decision = decisions.fit_decision(_cfg(), counts, p, y)
    t = decision["temperature"]
    assert t == pytest.approx(float(temperature.fit_temperature(p, y)))
    assert t > 1.5
    # tau is the one the grid search picks on the calibrated scores
    cal = temperature.apply(p, t)
    best = max((decisions._score(decisions.adjust(cal, {"tau": tau, "log_prior": decision["log_prior"]}), y,
                                 "balanced_accuracy"), -tau) for tau in decisions.TAU_GRID)
    assert decision["tau"] == -best[1]
    # adjust applies temperature then prior: the same as doing it by hand
    by_hand = (cal.log() - decision["tau"] * torch.tensor(decision["log_prior"])).softmax(1)
    assert torch.allclose(decisions.adjust(p, decision), by_hand, atol=1e-5)
    m = decisions.summarize_decided(decision, p, y, ["a", "b", "c"])
    assert m["temperature"] == pytest.approx(t)
    assert m["ece_uncalibrated"] == pytest.approx(float(expected_calibration_error(p, y)))
    assert m["uncorrected.accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))  # temperature keeps argmax
    assert decisions.fit_decision(_cfg(calibrate=False), counts, p, y)["temperature"] == 1.0


def test_the_binary_threshold_is_chosen_on_calibrated_scores():
    g = torch.Generator().manual_seed(6)
    y = (torch.rand(600, generator=g) < 0.3).long()
    z = torch.stack([torch.zeros(600), (y * 1.5 + torch.randn(600, generator=g)) * 4], 1)
    p = z.softmax(1)
    decision = decisions.fit_decision(_cfg(posthoc=False, target=0.9), np.array([420, 180]), p, y)
    cal = temperature.apply(p, decision["temperature"])[:, 1]
    assert decision["temperature"] != 1.0
    assert float((cal[y == 1] >= decision["threshold"]).float().mean()) >= 0.9
    assert torch.equal(decisions.decide(p, decision), (cal >= decision["threshold"]).long())


# ----------------------------------------------------------------------------- no meaningful fit: T = 1, said

def _margins(n=400, classes=3, margin=0.5, wrong=None):
    """Every row's true class ahead by `margin`; with `wrong`, row 0 lost by that tiny margin."""
    y = torch.arange(n) % classes
    z = torch.nn.functional.one_hot(y, classes).double() * margin
    if wrong is not None:
        z[0] = 0.0
        z[0, 1] = wrong
    return z, y


def _reference_nll(z, y):
    zz, yy = z.double().numpy(), y.numpy()

    def nll(t):
        s = zz / t
        s = s - s.max(1, keepdims=True)
        return -(s[np.arange(len(yy)), yy] - np.log(np.exp(s).sum(1))).mean()
    return nll


def test_a_separable_validation_set_keeps_one_and_says_why():
    z, y = _margins()
    nll = _reference_nll(z, y)
    assert nll(1e-3) < nll(temperature.MIN_T) < nll(1.0)  # the NLL only falls as T -> 0: no finite optimum
    t, note = temperature.fit_softmax(z.softmax(1), y)
    assert t == 1.0 and "classified correctly" in note and "no finite minimum" in note
    assert float(temperature.fit_temperature(z.softmax(1), y)) == 1.0  # not the bound 0.05 the search ends at


def test_a_nearly_separable_set_whose_optimum_is_below_the_bound_keeps_one():
    z, y = _margins(wrong=1e-4)  # one image lost by a hair: the optimum is finite but below MIN_T
    ref = minimize_scalar(_reference_nll(z, y), bounds=(1e-5, temperature.MAX_T), method="bounded",
                          options={"xatol": 1e-12}).x
    assert ref < temperature.MIN_T
    t, note = temperature.fit_softmax(z.softmax(1), y)
    assert t == 1.0 and f"bound {temperature.MIN_T:g}" in note and "separable" in note


def test_too_few_validation_images_keep_one_and_a_normal_set_fits_as_scipy_without_a_note():
    z, y = _overconfident(n=temperature.MIN_IMAGES - 1)
    t, note = temperature.fit_softmax(z.softmax(1), y)
    assert t == 1.0 and f"{temperature.MIN_IMAGES - 1} validation images" in note
    z, y = _overconfident(n=2000, true_t=2.0, seed=9)
    t, note = temperature.fit_softmax(z.softmax(1), y)
    assert note == "" and t == pytest.approx(_reference(z.double().numpy(), y.numpy()), rel=1e-3)


def test_the_reason_reaches_the_decision_metrics_report_and_log(tmp_path, capsys, monkeypatch):
    import json
    from engine.train import main as train_main
    from engine_testkit import FAST
    z, y = _margins(n=60)
    decision = decisions.fit_decision(_cfg(), np.array([20, 20, 20]), z.softmax(1).float(), y)
    assert decision["temperature"] == 1.0 and "classified correctly" in decision["temperature_note"]
    from engine_testkit import draw_no_pixels
    from tests.helpers import skip_figures
    draw_no_pixels(monkeypatch)  # the report's text is read, its pixels are not
    # a run whose validation split is too small to fit: FAST's 100 synthetic images leave fewer than MIN_IMAGES
    assert train_main(FAST + ["--out", str(tmp_path / "run"), "--epochs", "1", "--run.plan", "off"]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["val.n"] < temperature.MIN_IMAGES and m["test.temperature"] == 1.0
    note = m["calibration.note"]
    assert note.startswith("temperature kept at 1: ") and f"fewer than the {temperature.MIN_IMAGES}" in note
    assert f"**calibration** {note}" in (tmp_path / "run" / "report" / "README.md").read_text()
    assert f"calibration: {note}" in capsys.readouterr().out
    from engine.evaluate import main as evaluate_main  # the checkpoint carries the reason to engine.evaluate
    skip_figures(monkeypatch)  # evaluate's figures: not read here (the run's report above is)
    assert evaluate_main(["--checkpoint", str(tmp_path / "run"), "--data", "synthetic", "--device", "cpu",
                          "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["calibration.note"] == note
