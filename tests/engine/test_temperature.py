"""Temperature scaling against a reference fit (scipy's bounded scalar search on the same NLL),
per-label temperatures on a multi-label logits matrix, argmax/accuracy unchanged, and the
order temperature -> prior correction -> threshold in the stored decision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss

from engine import decisions, temperature
from engine.config import Config
from engine.metrics import expected_calibration_error


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
