import json
import subprocess
import sys
import warnings

import pytest

from engine.options.config import Config, ConfigError, parse_args

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_short_flags_and_dotted_overrides():
    cfg = parse_args(["--data", "x.npz", "--epochs", "3", "--amp", "--lr=0.01", "--optim.weight_decay", "0",
                      "--data.hflip", "false", "--batch-size", "16"]).config
    assert cfg.data.path == "x.npz" and cfg.train.epochs == 3 and cfg.train.amp is True
    assert cfg.optim.lr == 0.01 and cfg.optim.weight_decay == 0.0 and cfg.data.hflip is False
    assert cfg.data.batch_size == 16


def test_preset_applies_before_overrides_whatever_the_order():
    preset_only = parse_args(["--preset", "dermamnist"]).config
    cfg = parse_args(["--epochs", "1", "--preset", "dermamnist"]).config
    assert preset_only.train.epochs != 1 and cfg.train.epochs == 1
    assert cfg.data.image_size == preset_only.data.image_size == 28


@pytest.mark.parametrize("argv, fragment", [
    (["--no-such-flag"], "unknown option --no-such-flag"),
    (["--epoch", "3"], "did you mean --epochs"),
    (["--train.epoch", "3"], "did you mean --train.epochs"),
    (["--epochs", "three"], "--train.epochs expects int, got 'three'"),
    (["--batch-size", "0"], "--data.batch_size must be >= 1; got 0"),
    (["--lr", "-1"], "--optim.lr must be in (0.0, 10.0]; got -1.0"),
    (["--sampler", "balance"], "must be one of uniform, balanced"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--epochs"], "--epochs needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_mistakes_are_one_line_errors(argv, fragment):
    with pytest.raises(ConfigError) as err:
        parse_args(argv).config
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_round_trip_through_dict():
    cfg = parse_args(["--preset", "ham10000", "--seed", "7"]).config
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_cli_exits_2_with_one_line():
    # A real `python -m` process once: its exit status and stderr (no traceback) come from the
    # module's top-level handler. The other mistakes go through the same main(), in-process below.
    proc = subprocess.run([sys.executable, "-m", "engine.train", "--no-such-flag"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "unknown option --no-such-flag" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, fragment", [
    (["--no-such-flag"], "unknown option --no-such-flag"),
    (["--data", "/no/such/path", "--device", "cpu"], "/no/such/path: no such file or folder"),
])
def test_main_returns_2_with_one_line(argv, fragment, capsys):
    from engine.train import main
    with warnings.catch_warnings(record=True) as caught:  # a process would print them on stderr
        warnings.simplefilter("always")
        assert main(argv) == 2
    hidden_by_default = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    assert not [str(w.message) for w in caught if not issubclass(w.category, hidden_by_default)]
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
