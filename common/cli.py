"""The one command-line wrapper every entry point uses: `--help`, and the single `error:` line
with its exit status. Options are declared, parsed and explained by common/options.py.

Exit statuses: 0 done; 1 a fault of the machine (full disk, read-only folder: OSError) or a
run stopped before its end; 2 a user mistake (`ConfigError`: an option, a path, a file's
content); 3 a lost peer process under torchrun (an exception with `exit_status = 3`);
130 interrupted. Never a traceback for any of these.
"""
from __future__ import annotations

import difflib
import logging
import os
import sys
from typing import Callable

from common.errors import ConfigError
from common.faults import describe as describe_fault

EXIT_OK, EXIT_FAULT, EXIT_USAGE, EXIT_PEER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def run_main(action: Callable[[list[str]], int | None], argv: list[str] | None = None,
             usage: str | Callable[[], str] | None = None, interrupted: str = "interrupted") -> int:
    """`action(argv)` with `--help` printing `usage` (None: the action handles help itself, as
    argparse does) and every expected failure turned into one line on stderr and its status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if usage is not None and ("-h" in argv or "--help" in argv):
        print(usage() if callable(usage) else usage)
        return EXIT_OK
    try:
        status = action(argv)
    except ConfigError as exc:
        return error(exc, EXIT_USAGE)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # full disk, read-only or missing folder: a fault of the machine, not of the options
        return error(describe_fault(exc), EXIT_FAULT)
    except RuntimeError as exc:  # under torchrun: a rank died or hung (distributed.PeerLost)
        code = getattr(exc, "exit_status", None)
        if code is None:
            raise
        return error(exc, code)
    return EXIT_OK if status is None else int(status)


def exit_process(status: int):
    """`sys.exit(status)` for a CLI's `__main__`, except after a lost peer (EXIT_PEER): then the
    process ends at once, stdio flushed, without tearing down its process group.

    That group still holds the collective that failed: with gloo its worker and transport
    threads may be blocked on the lost peer, and with NCCL the communicator may be aborted
    mid-operation. A normal exit destroys the group during interpreter finalization and C++
    static destruction, in no fixed order with those threads; a thread object destroyed while
    still running ends the process with SIGABRT ("terminate called without an active
    exception", about one hung-peer run in three under gloo) instead of exit status 3 and its
    line. Everything worth keeping (checkpoint, history) was written atomically before.
    """
    if status != EXIT_PEER:
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(status)


def error(exc: BaseException | str, status: int) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return status


def doc_usage(doc: str) -> str:
    """A module docstring's first paragraph (the command line) as a usage line."""
    return "usage: " + " ".join(doc.strip().split("\n\n")[0].split()).strip("`")


def suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean --{close[0]}?)" if close else ""


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def split_argv(argv: list[str], flags=frozenset(), positional_ok: bool = False) -> list[tuple[str | None, str | None]]:
    """`--key value`, `--key=value`, `-k value` and bare boolean `--flag` into (key, raw-or-None)
    pairs, for every CLI (engine.options.config and common.options). A value may start with one dash (a
    negative number); a key in `flags` takes the next token only when it reads as a boolean.
    Positionals: (None, token) when `positional_ok`, else one error line."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("-") or token in ("-", "--"):
            if not positional_ok:
                raise ConfigError(f"unexpected argument {token!r}: options look like --key value")
            pairs.append((None, token))
            i += 1
            continue
        key, eq, value = token.lstrip("-").partition("=")
        if eq:
            pairs.append((key, value))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and (
                key not in flags or argv[i + 1].lower() in TRUE + FALSE):
            pairs.append((key, argv[i + 1]))
            i += 2
        else:
            pairs.append((key, None))
            i += 1
    return pairs


def expand_path(text: str) -> str:
    """`~` and `~user` expanded, as a shell would have done had the value not been quoted."""
    return os.path.expanduser(text) if text else text
