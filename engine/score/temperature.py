"""Temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017).

After training, one scalar T > 0 is fitted on the validation split by minimising the negative
log-likelihood of softmax(z / T); it is stored in the checkpoint's decision and applied before
the prior correction and the operating threshold (engine/score/decisions.py), by the runner's test
figures, engine.evaluate and engine.predict alike. Dividing every logit by the same T > 0
keeps their order, so argmax, accuracy and balanced accuracy are unchanged; only the
confidence moves.

Scores reach here as probabilities (engine/score/scoring.py; with TTA the mean of 8 softmaxes):
softmax(log p / T) equals softmax(z / T) because log p and z differ by a per-row constant.
For multi-label scores (independent sigmoids) each label gets its own temperature on its
logit log(p / (1 - p)); the fit is the same code with a vector of temperatures, because the
summed per-label NLLs are separable and their joint minimum is each label's own.

The fit runs L-BFGS on log T (T stays positive, the NLL is smooth in it), in float64 on the
host-side copy of the validation scores, once after training. T is bounded to
[MIN_T, MAX_T]; a fit that does not lower the validation NLL below T = 1's keeps T = 1.

A softmax fit keeps T = 1 and says why (`fit_softmax`'s note; stored in the decision, shown in
the log, metrics.json and the report) where its value would be meaningless: fewer than
MIN_IMAGES validation images; a validation set the model classifies entirely correctly (the
NLL then falls towards T -> 0 with no finite optimum, saturating every probability to 0 or 1);
or a fit that ended at a bound (the optimum lies outside [MIN_T, MAX_T], if it exists).
"""
from __future__ import annotations

import torch

MIN_T, MAX_T = 0.05, 20.0
MIN_PER_SIDE = 20  # multi-label: positives and negatives of a finding in validation for its own fit
MIN_IMAGES = 20    # softmax: validation images for one temperature (the same floor as a finding's side)
AT_BOUND = 1e-3    # relative distance to MIN_T / MAX_T read as "stopped at the bound"
EPS = 1e-7


def logits_of(probs: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Logits up to a per-row constant: log p (softmax), or log(p / (1 - p)) per label (sigmoid)."""
    p = probs.double().clamp(EPS, 1 - EPS) if multilabel else probs.double().clamp_min(1e-12)
    return (p / (1 - p)).log() if multilabel else p.log()


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor, multilabel: bool = False
        ) -> torch.Tensor:
    """Mean NLL at `temperature` (a scalar, or one per label column when multilabel)."""
    scaled = logits / temperature
    if multilabel:  # per label, summed over labels: separable in the per-label temperatures
        return torch.nn.functional.binary_cross_entropy_with_logits(
            scaled, targets.to(scaled.dtype), reduction="none").mean(0).sum()
    return torch.nn.functional.cross_entropy(scaled, targets)


def fit_softmax(probs: torch.Tensor, targets: torch.Tensor) -> tuple[float, str]:
    """Softmax scores: (temperature, note). The note is empty for a fitted T, else the one-line
    reason T = 1 was kept (the fit had no meaningful optimum on this validation split)."""
    logits, targets = logits_of(probs.detach().cpu()), targets.detach().cpu()
    n = len(targets)
    if n < MIN_IMAGES:
        return 1.0, f"temperature kept at 1: {n} validation images, fewer than the {MIN_IMAGES} a fit needs"
    true = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, targets.view(-1, 1), -torch.inf).amax(1)
    if bool((true > others).all()):
        return 1.0, (f"temperature kept at 1: all {n} validation images classified correctly, so the NLL has no "
                     "finite minimum (it falls as T -> 0)")
    fitted = float(_minimize(logits, targets, False))
    at = lambda t: float(nll(logits, targets, torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    # L-BFGS can stop short of a bound where the NLL is flat; a bound as good as the fit is one too
    low = fitted <= MIN_T * (1 + AT_BOUND) or at(MIN_T) <= at(fitted)
    if low or fitted >= MAX_T / (1 + AT_BOUND) or at(MAX_T) <= at(fitted):
        side = ("below it: the validation set is (nearly) separable, the NLL falls towards T -> 0" if low else
                "above it: the scores are no better than uniform")
        return 1.0, (f"temperature kept at 1: the fit on {n} validation images ended at its bound "
                     f"{MIN_T if low else MAX_T:g}; the optimum, if any, lies {side}")
    if not at(fitted) < at(1.0):
        return 1.0, "temperature kept at 1: no fitted value lowers the validation NLL"
    return fitted, ""


def _minimize(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """L-BFGS on log T; the result clamped to [MIN_T, MAX_T] (float64, shape () or (labels,))."""
    shape = (logits.shape[1],) if multilabel else ()
    log_t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    lbfgs = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = nll(logits, targets, log_t.clamp(-5, 5).exp(), multilabel)  # clamp: no overflow mid-search
        loss.backward()
        return loss

    lbfgs.step(closure)
    return log_t.detach().exp().clamp(MIN_T, MAX_T)


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Fitted temperature: shape () for softmax scores (`fit_softmax`, its note dropped), (labels,)
    for multi-label scores. `targets`: class indices (n,), or a 0/1 matrix (n, labels) when multilabel."""
    if not multilabel:
        return torch.tensor(fit_softmax(probs, targets)[0], dtype=torch.float32)
    logits = logits_of(probs.detach().cpu(), multilabel)
    targets = targets.detach().cpu()
    one = torch.ones((logits.shape[1],), dtype=torch.float64)
    if len(targets) < 2:
        return one.float()
    fitted = _minimize(logits, targets, multilabel)
    with torch.no_grad():
        if multilabel:  # per label: keep 1 where the fit did not help that label
            per_label = lambda t: torch.nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
                logits / t, targets.double(), reduction="none").mean(0)
            fitted = torch.where(per_label(fitted) < per_label(one), fitted, one)
            # A finding whose validation scores separate its positives from its negatives has no
            # finite fit (the NLL falls towards T -> 0, saturating every score to 0 or 1, where
            # float32 ties them and a threshold loses its ranking); nor does one seen only a few
            # times on a side. Both keep T = 1.
            y = targets > 0.5
            enough = (y.sum(0) >= MIN_PER_SIDE) & ((~y).sum(0) >= MIN_PER_SIDE)
            lowest_positive = torch.where(y, logits, torch.inf).amin(0)
            highest_negative = torch.where(~y, logits, -torch.inf).amax(0)
            fitted = torch.where(enough & (highest_negative >= lowest_positive), fitted, one)
    return fitted.float()


def apply(probs: torch.Tensor, temperature, multilabel: bool = False) -> torch.Tensor:
    """`probs` rescaled by `temperature` (a number or a list/tensor per label); unchanged at 1."""
    t = torch.as_tensor(temperature, dtype=torch.float32)  # a host value: the check below is no device sync
    if bool((t == 1).all()):
        return probs
    t = t.to(probs.device)
    if multilabel:
        return (logits_of(probs, True).float() / t).sigmoid()
    return (probs.float().clamp_min(1e-12).log() / t).softmax(1)
