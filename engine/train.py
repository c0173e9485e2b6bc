"""`python -m engine.train [options]`: train, validate, test, write the run folder.

Reads top to bottom: parse -> build (data, loaders, model, trainer) -> fit (epochs, test,
outputs). `--help` lists every option; docs/engine.md describes the files a run writes.
"""
from __future__ import annotations

from common.cli import EXIT_FAULT, EXIT_OK, exit_process, run_main
from engine.config import parse_args, config_usage
from engine.startup import prepare as prepare_process


def _train(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if cfg.run.resume:  # a new config: the run's own settings plus the options given that are safe to change
        from engine.resume_options import resumed_config
        cfg = resumed_config(argv, cfg.run.resume)
    prepare_process(cfg)  # before torch can touch cuBLAS
    from engine.runner import train  # heavy imports only after the arguments are valid
    return EXIT_OK if train(cfg) is not None else EXIT_FAULT  # None: stopped by a signal, state saved


def main(argv: list[str] | None = None) -> int:
    return run_main(_train, argv, config_usage)


if __name__ == "__main__":
    exit_process(main())  # after a lost peer: ends without tearing down the half-failed group
