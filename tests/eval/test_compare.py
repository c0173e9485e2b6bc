"""engine.compare on three tiny runs trained in this process: the table, the differing options,
the figure, globs, one-line errors; and wandb runs carry the same figures."""
import dataclasses
import json

import pytest
from PIL import Image

from engine import compare
from engine.output import tracking
from engine.train import main as train_main
from tests.helpers import write_jpegs

# compare reads metrics.json and config.json alone: the runs draw no report figures and skip the
# plan's timed calibration (the same options in every run either way)
TINY = ["--model", "mlp", "--batch-size", "8", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
        "--run.report", "false", "--run.plan", "off"]
VARIANTS = {"run_a": ["--epochs", "1", "--lr", "0.01"], "run_b": ["--epochs", "1", "--lr", "0.001"],
            "run_c": ["--epochs", "2", "--lr", "0.01"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = write_jpegs(root / "data", n=36, size=16)
    for name, extra in VARIANTS.items():
        assert train_main(["--data", str(data), "--out", str(root / "runs" / name)] + TINY + extra) == 0
    # a third learning rate, outside the run_* glob: with run_a and run_b, three runs that differ in one option
    assert train_main(["--data", str(data), "--out", str(root / "runs" / "lr_d")] + TINY
                      + ["--epochs", "1", "--lr", "0.1"]) == 0
    (root / "runs" / "unfinished").mkdir()  # a glob passes over folders without metrics.json
    return root / "runs"


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_three_runs_table_options_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert compare.main([str(runs / "run_*"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    rows = {name: next(line for line in lines if line.startswith(name + " ")) for name in VARIANTS}
    for name, line in rows.items():
        m = _metrics(runs / name)
        assert f"{m['test.accuracy']:.4f}" in line and f"{m['test.f1_macro']:.4f}" in line
        assert (f"{m['test.balanced_accuracy']:.4f} [{m['test.balanced_accuracy_ci_low']:.4f}, "
                f"{m['test.balanced_accuracy_ci_high']:.4f}]") in line
        assert f"[{m['test.auc_macro_ci_low']:.4f}, {m['test.auc_macro_ci_high']:.4f}]" in line
        assert f"{m['wall_seconds']:.1f}" in line and f"  {m['epochs']}  " in line
    options = text[text.index("options that differ"):]
    assert "optim.lr" in options and "train.epochs" in options
    assert "run.out" not in options and "model.name" not in options  # the same everywhere, or where it went
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_three_runs_differing_in_one_option_print_that_option_alone_and_write_the_figure(runs, tmp_path, capsys):
    out = tmp_path / "one_option.png"
    names = ["run_a", "run_b", "lr_d"]
    assert compare.main([str(runs / n) for n in names] + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(any(line.startswith(n + " ") for line in text.splitlines()) for n in names)
    options = text[text.index("options that differ"):].split("\n\n")[0].splitlines()[1:]  # the table, to its end
    assert [line.split()[0] for line in options] == ["option", "optim.lr"], options
    assert options[1].split()[1:] == ["0.01", "0.001", "0.1"]  # each run's value, in the order given
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.getextrema() != ((255, 255),) * 3


def test_runs_named_one_by_one_and_checked(runs, tmp_path, capsys):
    out = tmp_path / "two.png"
    assert compare.main(["--out", str(out), str(runs / "run_a"), str(runs / "run_b" / "metrics.json")]) == 0
    text = capsys.readouterr().out
    assert "run_a " in text and "run_b " in text and "run_c" not in text and out.exists()


def test_bad_input_is_one_error_line(runs, tmp_path, capsys):
    assert compare.main([str(runs / "unfinished"), "--out", str(tmp_path / "x.png")]) == 2
    assert compare.main([str(tmp_path / "nothing*"), "--out", str(tmp_path / "x.png")]) == 2
    assert compare.main(["--out", str(tmp_path / "x.png")]) == 2
    assert compare.main([str(runs / "run_a"), "--out", str(tmp_path / "x.pdf")]) == 2
    assert compare.main([str(runs / "run_a"), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err), err
    assert "no metrics.json" in err[0] and "matches no run" in err[1] and "at least one run" in err[2]


def test_help_describes_every_option(capsys):
    assert compare.main(["--help"]) == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(compare.Options):  # each option with its one-line description
        assert f"--{f.name.replace('_', '-')} " in text and f.metadata["help"] in text


class RecordingRun:
    def __init__(self):
        self.summary, self.logged = {}, []

    def log(self, data, step=None):
        self.logged.append(data)

    def finish(self, exit_code=0):
        pass


def test_wandb_summary_carries_every_compared_figure(runs):
    pytest.importorskip("wandb")
    m = _metrics(runs / "run_c")
    keys = [k for _, key in compare.FIGURES for k in (f"test.{key}", f"test.{key}_ci_low", f"test.{key}_ci_high")
            if k in m] + [key for _, key in compare.FACTS]
    run = RecordingRun()
    tracking.Tracker(run).finish(m)
    assert len(keys) >= 9 and all(run.summary[k] == m[k] for k in keys)


def test_wandb_summary_carries_the_calibration_and_tta_fields_of_a_real_run(runs):
    """Built before wandb is touched, so checked with or without wandb installed."""
    m = _metrics(runs / "run_a")
    summary = tracking.summary_of(m)
    fields = [f"{s}.{k}" for s in ("test", "val") for k in ("ece", "ece_uncalibrated", "temperature")] + ["tta"]
    assert all(k in m and summary[k] == m[k] for k in fields if m.get(k) is not None)
    assert "test.temperature" in summary and summary["tta"] is m["tta"]
    scalars = {k for k, v in m.items() if isinstance(v, (bool, int, float, str))}
    assert set(summary) == scalars and all(summary[k] == m[k] for k in scalars)
