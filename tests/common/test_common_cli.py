"""common/cli.py: the one wrapper's statuses and lines, and the shared option parser."""
from __future__ import annotations

import errno
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.cli import run_main
from common.options import opt, parse, take
from common.errors import ConfigError


class Lost(RuntimeError):
    exit_status = 3


def _raise(exc):
    def action(argv):
        raise exc
    return action


@pytest.mark.parametrize("exc, status, line", [
    (ConfigError("--x must be >= 1; got 0"), 2, "error: --x must be >= 1; got 0"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/preds.csv"), 1,
     "error: could not write /x/preds.csv (No space left on device); free some space or choose another --out"),
    (OSError(errno.EROFS, "Read-only file system"), 1, "error: could not write (Read-only file system); "
     "choose a writable --out"),
    (Lost("rank 1/2: another process failed"), 3, "error: rank 1/2: another process failed"),
])
def test_expected_failures_are_one_line_and_a_status(capsys, exc, status, line):
    assert run_main(_raise(exc), []) == status
    assert capsys.readouterr().err.splitlines() == [line]


def test_interrupt_is_130_with_the_callers_note(capsys):
    assert run_main(_raise(KeyboardInterrupt()), [], interrupted="interrupted: kept") == 130
    assert capsys.readouterr().err.strip() == "interrupted: kept"


def test_a_bug_still_shows_its_traceback():
    with pytest.raises(RuntimeError):
        run_main(_raise(RuntimeError("a real bug")), [])


def test_help_prints_usage_without_running(capsys):
    assert run_main(_raise(AssertionError("must not run")), ["--help"], "usage: x") == 0
    assert capsys.readouterr().out.strip() == "usage: x"


def test_status_of_the_action_is_returned():
    assert run_main(lambda argv: 1, []) == 1 and run_main(lambda argv: None, []) == 0


@dataclass
class Spec:
    name: str = opt("", required=True, path=True, help="a name")
    count: int = opt(0, ge=0, help="a count")
    flag: bool = opt(False, help="a flag")
    split: str = opt("test", choices=("test", "val"), help="a split")


@pytest.mark.parametrize("argv, message", [
    (["--nope", "1"], "p: unknown option --nope"),
    (["--count", "x"], "p: --count expects int, got 'x'"),
    (["--flag=maybe"], "p: --flag expects bool, got 'maybe'"),
    (["--count"], "p: --count needs a value"),
    (["--count", "-1", "--name", "a"], "p: --count must be >= 0; got -1"),
    ([], "p: --name required"),
    (["--name", "a", "--split", "tset"], "p: --split must be one of test, val; got 'tset'"),
    (["--name", "a", "stray"], "p: unexpected argument 'stray'"),
])
def test_parse_mistakes(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(argv, Spec, "p")
    assert str(err.value).startswith(message)


def test_parse_types_paths_and_what_was_given():
    got, given = parse(["--name", "~/a", "--count=3", "--flag"], Spec, "p")
    assert got.count == 3 and got.flag is True and not got.name.startswith("~")
    assert given == {"name", "count", "flag"}
    assert parse(["--name", "a", "--flag", "false"], Spec, "p")[0].flag is False  # booleans read one way


def test_take_leaves_the_other_options():
    own, given, rest = take(["--epochs", "2", "--count", "4", "--amp", "--flag", "--name=x"], Spec, "p")
    assert own.count == 4 and own.flag is True and given == {"count", "flag", "name"} and rest == ["--epochs", "2", "--amp"]


def _exit_in_child(status: int) -> subprocess.CompletedProcess:
    # An atexit handler stands for the teardown that must not run after a lost peer.
    code = ("import atexit, sys; from common.cli import exit_process; "
            "atexit.register(lambda: print('teardown ran', flush=True)); "
            f"print('line kept', end=''); print('error: lost', file=sys.stderr, end=''); exit_process({status})")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


def test_exit_after_a_lost_peer_skips_teardown_but_keeps_stdio():
    done = _exit_in_child(3)
    assert done.returncode == 3
    assert done.stdout == "line kept" and done.stderr == "error: lost"


@pytest.mark.parametrize("status", [0, 1, 2])
def test_other_statuses_exit_normally(status):
    done = _exit_in_child(status)
    assert done.returncode == status and "teardown ran" in done.stdout


def test_one_tokenizer_reads_single_dash_keys_and_negative_values_for_every_cli():
    # engine.options.config and common.options share common.cli.split_argv: `-k value` is a key for both,
    # a value may start with one dash, and a second dash always starts the next option.
    from common.cli import split_argv
    from engine.options.config import parse_args
    assert split_argv(["-o", "f.png", "--lr", "-0.5", "--amp", "--x=-1"]) == [
        ("o", "f.png"), ("lr", "-0.5"), ("amp", None), ("x", "-1")]
    assert split_argv(["-o", "-", "a"], positional_ok=True) == [("o", "-"), (None, "a")]

    @dataclass
    class Short:
        output: str = opt("", short="o", help="where")
        scale: float = opt(1.0, help="factor")
    assert parse(["-o", "plot.png", "--scale", "-2"], Short, "p")[0] == Short("plot.png", -2.0)
    with pytest.raises(ConfigError, match="unknown option --x"):
        parse_args(["-x", "1"])  # a single-dash train option is an unknown key, named as one
    assert parse_args(["-epochs", "3"]).config.train.epochs == 3
