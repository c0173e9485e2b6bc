"""`python -m engine.train [options]`: train, validate, test, write the run folder.

Reads top to bottom: parse -> build (data, loaders, model, trainer) -> fit (epochs, test,
outputs). `--help` lists every option; docs/engine.md describes the files a run writes.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

from common.cli import EXIT_FAULT, EXIT_OK, exit_process, run_main
from engine.options.config import parse_args, config_usage
from engine.run.startup import prepare as prepare_process


def _train(argv: list[str]) -> int:
    parsed = parse_args(argv)
    cfg = parsed.config
    saved = None
    if cfg.run.resume:  # a new config: the run's own settings plus the options given that are safe to change
        from engine.run import checkpoint
        from engine.options.resume_options import resumed_config
        saved = checkpoint.load(cfg.run.resume)  # read once: the config, then the state to continue from
        cfg = resumed_config(argv, cfg.run.resume, saved)
    prepare_process(cfg)  # before torch can touch cuBLAS
    from engine.run.runner import train  # heavy imports only after the arguments are valid
    return EXIT_OK if train(cfg, explicit=parsed.explicit, saved=saved) is not None else EXIT_FAULT  # None: stopped by a signal, state saved


def main(argv: list[str] | None = None) -> int:
    return run_main(_train, argv, config_usage)


if __name__ == "__main__":
    exit_process(main())  # after a lost peer: ends without tearing down the half-failed group
