"""The CLIs called in the test's own process (`main(argv) -> int`), for the reliability tests
whose behaviour needs no process of its own: no interpreter start-up and torch import per call
(seconds each on two cores). broken.error_line checks the one `error:` line contract on a
Result as on a subprocess; an exception the top-level handler let through fails the test with
its traceback. A few tests keep a real `python -m` (broken.run_cli) to cover that handler.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def call(module: str, argv: list, capsys) -> Result:
    """`python -m <module> argv`, in-process: the status and what it printed (log records go to
    pytest's caplog, not stderr, as pytest holds the root logger)."""
    import importlib
    main = importlib.import_module(module).main
    capsys.readouterr()  # only this call's output
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return Result(status, out, err)

