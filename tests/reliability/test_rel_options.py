"""Options read as meant or refused in one line (issue 17 item 6): empty --data, `~` in every
path option, --resume/--checkpoint as folder or file, numbers bounded as torch bounds them,
rules between two options."""
from __future__ import annotations

import os

import pytest
import torch

from engine.score import inference
from engine.options.config import PATHS, ConfigError, Config, parse_args
from engine.run.loop import make_optimizer

from . import broken, cli_in_process

HOME = os.path.expanduser("~")


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_empty_data_is_refused_not_the_current_folder(value, tmp_path):
    line = broken.error_line(broken.run_cli(["--data", value, "--out", tmp_path / "run"]))
    assert line == "error: --data is empty (an unset shell variable?); give a dataset path or 'synthetic'"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", PATHS)
def test_tilde_is_expanded_in_every_path_option(key):
    flag = "--" + key
    cfg = parse_args([flag, "~/medtrain-x/y"]).config
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    assert value == os.path.join(HOME, "medtrain-x/y")


def test_every_path_like_option_is_declared_a_path():
    """A new option holding a file or folder must say so, or `~` would reach the file system."""
    path_like = {k for k, v in _flat(Config()).items() if k.endswith(("path", "_dir", ".out", ".resume", ".pretrained"))}
    assert path_like == set(PATHS)


def _flat(cfg: Config) -> dict:
    return {f"{s}.{k}": v for s, values in cfg.to_dict().items() for k, v in values.items()}


@pytest.mark.parametrize("given, expected", [
    ("runs/a", "runs/a"), ("runs/a/", "runs/a/"), ("runs/a/checkpoint.pt", "runs/a"), ("checkpoint.pt", "."),
    ("~/runs/a/checkpoint.pt", os.path.join(HOME, "runs/a")),
])
def test_resume_takes_the_run_folder_or_its_checkpoint(given, expected):
    assert parse_args(["--resume", given]).config.run.resume == expected


@pytest.mark.parametrize("given, expected", [
    ("runs/a", "runs/a"), ("runs/a/checkpoint.pt", "runs/a"), ("~/r/checkpoint.pt", os.path.join(HOME, "r")),
])
def test_checkpoint_option_takes_the_run_folder_or_its_file(given, expected):
    options = inference.options_of(["--checkpoint", given, "--data", "~/d"], inference.ScoreOptions,
                                   "engine.evaluate")
    assert options["checkpoint"] == expected and options["data"] == os.path.join(HOME, "d")


@pytest.mark.parametrize("module", ["engine.evaluate", "engine.predict"])
def test_evaluate_and_predict_refuse_an_empty_data(module, tmp_path, capsys):
    argv = ["--checkpoint", tmp_path, "--data", "", "--out", tmp_path / "p.csv"]
    line = broken.error_line(cli_in_process.run_cli(capsys, argv, module))
    assert line == f"error: {module}: --data required"


def test_the_refusal_is_one_line_under_python_m_too(tmp_path):
    """The same refusal through the top-level handler of a real `python -m` (engine.evaluate's:
    test_rel_labels.py, engine.train's: test_empty_data_is_refused_not_the_current_folder)."""
    line = broken.error_line(broken.run_cli(["--checkpoint", tmp_path, "--data", "", "--out", tmp_path / "p.csv"],
                                            module="engine.predict"))
    assert line == "error: engine.predict: --data required"


# (argv, the line) -- values torch's own classes refuse or that silently break a run
BOUNDS = [
    (["--schedule.plateau_factor", "-1"], "--schedule.plateau_factor must be in (0.0, 1.0); got -1.0"),
    (["--schedule.plateau_factor", "0"], "--schedule.plateau_factor must be in (0.0, 1.0); got 0.0"),
    (["--schedule.plateau_factor", "1"], "--schedule.plateau_factor must be in (0.0, 1.0); got 1.0"),
    (["--lr", "0"], "--optim.lr must be in (0.0, 10.0]; got 0.0"),
    (["--lr", "-1e-3"], "--optim.lr must be in (0.0, 10.0]; got -0.001"),
    (["--train.mixup", "-1"], "--train.mixup must be >= 0.0; got -1.0"),
    (["--train.cutmix", "-0.5"], "--train.cutmix must be >= 0.0; got -0.5"),
    (["--optim.momentum", "-0.1"], "--optim.momentum must be in [0.0, 1.0); got -0.1"),
    (["--optim.momentum", "1"], "--optim.momentum must be in [0.0, 1.0); got 1.0"),
    (["--optim.weight_decay", "-0.01"], "--optim.weight_decay must be >= 0.0; got -0.01"),
    (["--schedule.plateau_patience", "-1"], "--schedule.plateau_patience must be >= 0; got -1"),
    (["--seed", "-3"], "--train.seed must be in [0, 9223372036854775807]; got -3"),
    (["--model.dropout", "1"], "--model.dropout must be in [0.0, 0.99]; got 1.0"),
    (["--train.ema", "1"], "--train.ema must be in [0.0, 0.99999]; got 1.0"),
]


@pytest.mark.parametrize("argv, message", BOUNDS)
def test_numbers_outside_their_bounds_are_one_line_errors(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_args(argv).config
    assert str(err.value) == message


@pytest.mark.parametrize("factor", [-1.0, 1.0, 1.5])
def test_plateau_bounds_agree_with_torch(factor):
    """torch refuses factor >= 1 itself; a negative factor it accepts drives the lr negative."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ConfigError):
        parse_args(["--schedule.plateau_factor", str(factor)]).config
    if factor >= 1:
        with pytest.raises(ValueError):
            torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.5, True), (0.9, True)])
def test_sgd_uses_nesterov_only_with_momentum(momentum, nesterov):
    cfg = parse_args(["--optim.name", "sgd", "--optim.momentum", str(momentum)]).config
    opt = make_optimizer(torch.nn.Linear(3, 2), cfg, torch.device("cpu"))
    assert opt.defaults["nesterov"] is nesterov and opt.defaults["momentum"] == momentum


def test_sgd_without_momentum_trains(tmp_path, capsys):
    data = broken.good_folder(tmp_path / "data", n=16, classes=("a", "b"))
    result = cli_in_process.run_cli(capsys, broken.fast_run_args(data, tmp_path / "run") + ["--optim.name", "sgd",
                                                                                              "--optim.momentum", "0"], "engine.train")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--model.metadata", "age", "--cuda-graph"], "--model.metadata with --cuda-graph is not supported yet"),
    (["--data.val_fraction", "0.5", "--data.test_fraction", "0.5"], "leave nothing for training"),
])
def test_rules_between_two_options_are_one_line(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_args(argv).config
    assert message in str(err.value) and "\n" not in str(err.value)
