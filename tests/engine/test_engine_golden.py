"""Golden run: the dermamnist preset, deterministic, 3 epochs, pinned to the figures it gave
before the spine renovation (commit 987f651, taken on an Intel Xeon with AVX-512 and AMX).

Two kinds of pin (issue 25):
- EXACT, for what no float summation order can move: the split (labels and pixels of each
  part, in order), the sampler's order and class histogram per epoch, the augmentation
  parameters drawn, the learning-rate table. tests/engine/golden_probe.py reads them from the
  built run in-process (seconds), and the 3-epoch run's history repeats the histograms and
  learning rates. A change of seed, sampler (kind or alpha), crop scale or any augmentation
  or schedule option moves one of them; `test_a_changed_option_fails_the_golden_pins` shows
  each (under the preset's uniform sampler alpha is inert, so the balanced sampler's draws
  are pinned too).
- TOLERANCE, for the trained figures, whose float order depends on the CPU's instruction set
  (PyTorch's and oneDNN's kernels, the native C kernel's -march) and on native kernels on/off.
  Measured spread (bench/isa_spread.py, bench/results/cpu-isa-spread.json; max - min per
  figure over all epochs, 7 runs: the
  Intel golden; on an AMD EPYC with AVX2 only, eager layers at ATen/oneDNN native (AVX2),
  at ATEN_CPU_CAPABILITY=avx2 + ONEDNN_MAX_CPU_ISA=AVX2 and at ATEN_CPU_CAPABILITY=default +
  ONEDNN_MAX_CPU_ISA=SSE41; native kernels on at -march=native, -march=x86-64 and the narrow
  ISA + -march=x86-64-v2; measured on a loaded 2-core machine, 2026-12-03):
      train.loss 1.2e-3  train.accuracy 3.0e-3  val.accuracy 1.2e-2  val.balanced_accuracy 1.6e-2
      val.auc_macro 2.4e-3  val.log_loss 4.7e-3  test.accuracy 2.5e-3  test.balanced_accuracy 1.0e-2
      test.auc_macro 1.8e-3  test.log_loss 3.6e-3   (lr and histograms: 0, identical everywhere)
  The tolerances are twice the largest spread of each metric (val and test share one). The
  balanced accuracy is the loosest because one of the 12 validation images of the rarest class
  is 1/84 of it. The failures issue 25 quotes (an AMD EPYC with AVX-512: at most 8e-3 in val
  accuracy, 7.5e-3 in balanced accuracy) are inside them. Label smoothing 0.1 -> 0.05 moves the
  train loss by about 0.1, far outside; the first steps' losses (golden_probe.short_losses)
  moved by at most 2.8e-5 over the same variants and are held at 1e-4.

What legitimately differs by CPU: bf16 (a CPU with AVX512-BF16/AMX trains `--amp` in bf16,
others in fp32; this run has no --amp, so the branch is not taken here: tests/kernels/
test_cpu_branches.py checks each branch) and the native kernel's instruction set (built for
the CPU it runs on). The emulated run below takes the narrow branch of both kernels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from golden_probe import build_golden, pins, short_losses

REPO = Path(__file__).resolve().parents[2]

# Per epoch: lr at epoch end, train loss/accuracy, val accuracy/balanced accuracy/AUC/log loss.
FIGURES = ("lr", "train.loss", "train.accuracy", "val.accuracy", "val.balanced_accuracy", "val.auc_macro",
           "val.log_loss")
GOLDEN = [
    (0.0019906170200556517, 1.2124022466165048, 0.6572627314814815, 0.7068793619142573, 0.25580494678855337,
     0.8819017238157956, 0.829467948585751),
    (0.0009554631542414427, 1.042852430431931, 0.7090567129629629, 0.7347956131605184, 0.3343980280748431,
     0.9076458086590833, 0.7755546474515708),
    (2.037589729297906e-05, 0.9965254576117905, 0.7336516203703703, 0.7547357926221336, 0.38518768717831947,
     0.9124999332570496, 0.7515836580173323),
]
HISTOGRAMS = [[227, 354, 756, 80, 770, 4627, 98], [224, 355, 760, 80, 770, 4626, 97],
              [225, 353, 758, 78, 771, 4628, 99]]
TEST = {"test.accuracy": 0.7336658354114713, "test.balanced_accuracy": 0.3561832807222695,
        "test.auc_macro": 0.9099061169717034, "test.log_loss": 0.7507435868504594}
TEST_EXACT = {"best_epoch": 3}
# Twice the measured spread across instruction sets (module docstring); lr: exact.
TOLERANCE = {"lr": 0.0, "train.loss": 3e-3, "train.accuracy": 6e-3, "accuracy": 0.025, "balanced_accuracy": 0.035,
             "auc_macro": 5e-3, "log_loss": 0.01}

PINS = {"split": {"train": "5164667f5bf8aefc", "val": "18b6d506d3551952", "test": "0b1575828f0aed53"},
        "split_counts": {"train": [228, 359, 769, 80, 779, 4693, 99], "val": [33, 52, 110, 12, 111, 671, 14],
                         "test": [66, 103, 220, 23, 223, 1341, 29]},
        "steps_per_epoch": 54, "order": ["8874cab13880e4e3", "0580b6481a8d30ba", "f938085224180419"],
        "histograms": HISTOGRAMS, "augment": "5b18548da27af899", "lr_table": "789b7128083921f9",
        "lr_epoch_end": [g[0] for g in GOLDEN]}
# The same run with the ham10000 preset's sampler (balanced, alpha 0.5): its draws, exactly.
BALANCED = ["--sampler.kind", "balanced", "--sampler.alpha", "0.5"]
BALANCED_PINS = {"order": ["bc5e9042446cc60a", "609c67b3ddff0e2c", "fb66e4cd787b5b9c"],
                 "histograms": [[589, 740, 1082, 349, 1090, 2674, 388], [589, 740, 1082, 349, 1090, 2673, 389],
                                [589, 739, 1083, 349, 1090, 2674, 388]]}
# golden_probe.short_losses: the first 12 steps' training losses (AMD EPYC AVX2, native kernels on).
SHORT_LOSSES = [1.9658699035644531, 1.8781037330627441, 1.6301336288452148, 1.3891444206237793, 1.40707528591156,
                1.6533377170562744, 1.5623829364776611, 1.4633586406707764, 1.3505032062530518,
                1.2010835409164429, 1.2446650266647339, 1.2735610008239746]
SHORT_LOSS_TOL = 1e-4  # measured spread 2.8e-5 (native on/off, ATen default..AVX2, oneDNN SSE41..AVX2, 1-2 threads)

# A CPU without AVX2 or AVX-512, as far as PyTorch, oneDNN and the native kernel can tell.
NARROW_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MEDTRAIN_NATIVE_MARCH": "x86-64-v2"}


def _tolerance(figure: str) -> float:
    name = figure.split(".", 1)[1] if figure.startswith(("val.", "test.")) else figure
    return TOLERANCE.get(figure, TOLERANCE.get(name))


def history_mismatches(rows: list[dict], metrics: dict) -> list[str]:
    """Every pinned figure of a finished run outside its tolerance (exact ones at 0), as text."""
    bad = []
    if len(rows) != len(GOLDEN):
        return [f"{len(rows)} epochs, golden has {len(GOLDEN)}"]
    for row, golden, histogram in zip(rows, GOLDEN, HISTOGRAMS):
        for figure, want in zip(FIGURES, golden):
            if abs(row[figure] - want) > _tolerance(figure):
                bad.append(f"epoch {row['epoch']}: {figure} {row[figure]:.5f} vs golden {want:.5f} "
                           f"(tolerance {_tolerance(figure):g})")
        if row["train.class_histogram"] != histogram:
            bad.append(f"epoch {row['epoch']}: class histogram {row['train.class_histogram']} vs {histogram}")
    for key, want in TEST.items():
        if abs(metrics[key] - want) > _tolerance(key):
            bad.append(f"{key} {metrics[key]:.5f} vs golden {want:.5f} (tolerance {_tolerance(key):g})")
    bad += [f"{k} {metrics[k]} vs {v}" for k, v in TEST_EXACT.items() if metrics[k] != v]
    return bad


def pin_mismatches(got: dict, want: dict) -> list[str]:
    return [f"{key}: {got.get(key)} vs golden {value}" for key, value in want.items() if got.get(key) != value]


def loss_mismatches(losses: list[float]) -> list[str]:
    return [f"step {i}: loss {a:.6f} vs golden {b:.6f}" for i, (a, b) in enumerate(zip(losses, SHORT_LOSSES))
            if abs(a - b) > SHORT_LOSS_TOL]


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    """Built once for the module (the real data, as conftest's dermamnist_npz finds it)."""
    data = Path(os.environ.get("MEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")) / "dermamnist28.npz"
    if not data.exists():
        pytest.skip(f"real DermaMNIST npz not found at {data}")
    return build_golden(data, tmp_path_factory.mktemp("golden"))


def test_golden_inputs_are_pinned_exactly(golden_run):
    assert pin_mismatches(pins(golden_run), PINS) == []


def test_golden_first_steps_train_to_the_pinned_losses(golden_run):
    losses = short_losses(golden_run, len(SHORT_LOSSES))
    assert loss_mismatches(losses) == [], losses


def test_balanced_sampler_draws_are_pinned_exactly(dermamnist_npz, tmp_path):
    run = build_golden(dermamnist_npz, tmp_path / "run", BALANCED, model=False)
    assert pin_mismatches(pins(run), BALANCED_PINS) == []


@pytest.mark.parametrize("extra, pinned, what", [
    (["--train.seed", "1"], PINS, "order"),
    (["--data.crop_scale_min", "0.9"], PINS, "augment"),
    ([*BALANCED[:3], "0.4"], BALANCED_PINS, "histograms"),
], ids=["seed", "crop-scale", "sampler-alpha"])
def test_a_changed_option_fails_the_golden_pins(dermamnist_npz, tmp_path, extra, pinned, what):
    run = build_golden(dermamnist_npz, tmp_path / "run", extra, model=False)
    bad = pin_mismatches(pins(run), pinned)
    assert any(line.startswith(what + ":") for line in bad), bad


def test_a_changed_label_smoothing_fails_the_golden_losses(dermamnist_npz, tmp_path):
    # The pins cannot see the loss; its first steps can (0.1 -> 0.05 moves step 1 by 3e-4, step 4 by 4e-2).
    run = build_golden(dermamnist_npz, tmp_path / "run", ["--optim.label_smoothing", "0.05"])
    assert pin_mismatches(pins(run), PINS) == []  # only the loss changed
    assert len(loss_mismatches(short_losses(run, 4))) >= 3


def test_history_check_is_not_blind():
    """The 3-epoch comparison flags a seed's histograms and a label smoothing's loss shift."""
    rows = [dict(zip(FIGURES, g), epoch=e, **{"train.class_histogram": h})
            for e, (g, h) in enumerate(zip(GOLDEN, HISTOGRAMS))]
    metrics = TEST | TEST_EXACT
    assert history_mismatches(rows, metrics) == []
    shifted = [r | {"train.loss": r["train.loss"] + 0.05} for r in rows]
    assert len(history_mismatches(shifted, metrics)) == 3
    reseeded = [r | {"train.class_histogram": [x + 1 for x in r["train.class_histogram"]]} for r in rows]
    assert len(history_mismatches(reseeded, metrics)) == 3


def _probe_in(env_extra: dict, data: Path, out: Path) -> dict:
    """golden_probe in a fresh interpreter: the ISA variables are read when torch loads."""
    env = os.environ | env_extra | {"WANDB_MODE": "disabled", "MEDTRAIN_CACHE": str(out / "cache"),
                                    "MEDTRAIN_KERNEL_CACHE": str(out / "kernels")}
    done = subprocess.run([sys.executable, "-m", "tests.engine.golden_probe", str(data), str(out / "run")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_emulated_narrow_cpu_gives_the_same_pins_and_first_losses(dermamnist_npz, tmp_path):
    """Another CPU, emulated: kernels narrowed to SSE4.1 / x86-64-v2 and the eager layers (the
    branch a machine without a C compiler takes). Exact pins, losses at the measured tolerance."""
    got = _probe_in(NARROW_CPU | {"MEDTRAIN_NATIVE_KERNELS": "off"}, dermamnist_npz, tmp_path)
    assert pin_mismatches(got["pins"], PINS) == []
    assert loss_mismatches(got["losses"]) == [], got["losses"]


SLOW = os.environ.get("MEDTRAIN_SLOW_TESTS", "") not in ("", "0")
# The golden run's command line; the report is off (figures do not enter the history or
# metrics.json, and drawing them cost a fifth of the run), and the pinned test log loss
# predates temperature scaling.
THREE_EPOCHS = ["--preset", "dermamnist", "--train.deterministic", "true", "--epochs", "3", "--train.progress", "off",
                "--wandb", "disabled", "--device", "cpu", "--eval.calibrate", "false", "--run.report", "false"]


def _finished(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "metrics.json").read_text())


def test_dermamnist_preset_three_epochs_matches_the_golden_history(dermamnist_npz, tmp_path):
    """This CPU as it is (native kernels on when a C compiler is present), in this process: the
    instruction set is this machine's either way, and a fresh interpreter would add its start-up."""
    from engine.train import main as train_main
    out = tmp_path / "run"
    assert train_main([*THREE_EPOCHS, "--data", str(dermamnist_npz), "--out", str(out)]) == 0
    assert history_mismatches(*_finished(out)) == []


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="MEDTRAIN_SLOW_TESTS=1 runs it")
def test_dermamnist_preset_three_epochs_on_an_emulated_narrow_cpu(dermamnist_npz, tmp_path):
    """The kernels narrowed to SSE4.1 / x86-64-v2 and the eager layers, the other branch of both:
    1.7x the time of the run above (the default ATen kernels), in a fresh interpreter (the ISA
    variables are read when torch loads). Its pins and first losses are checked in the default
    run by test_emulated_narrow_cpu_gives_the_same_pins_and_first_losses."""
    env = os.environ | NARROW_CPU | {"MEDTRAIN_NATIVE_KERNELS": "off", "WANDB_MODE": "disabled",
                                     "MEDTRAIN_CACHE": str(tmp_path / "cache"),
                                     "MEDTRAIN_KERNEL_CACHE": str(tmp_path / "kernels")}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "engine.train", *THREE_EPOCHS, "--data", str(dermamnist_npz),
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert history_mismatches(*_finished(out)) == []
