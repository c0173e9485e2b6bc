"""`python -m engine.train [options]`: train, validate, test, write the run folder.

Reads top to bottom: parse -> data -> loaders -> model -> epochs -> test -> outputs.
See DESIGN.md for the options and the files a run writes.
"""
from __future__ import annotations

import sys

from engine.config import ConfigError, parse_args, usage


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    try:
        cfg = parse_args(argv)
        if cfg.run.resume:  # the run's own settings, plus the options given that are safe to change
            from engine.resume_options import resolve
            cfg = resolve(argv, cfg.run.resume)
        from engine.runner import train  # heavy imports only after the arguments are valid
        metrics = train(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # full disk, read-only or missing folder: a fault of the machine, not of the options
        from engine.faults import describe
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # under torchrun: a rank died or hung; one line, not a traceback
        from engine.distributed import PeerLost
        if not isinstance(exc, PeerLost):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0 if metrics is not None else 1


if __name__ == "__main__":
    sys.exit(main())
