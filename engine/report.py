"""`python -m engine.report RUN_DIR`: rebuild a run's report (figures and README.md) from its
folder alone; the report itself is engine/output/run_report.py's."""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_main
from common.options import opt, parse, usage
from engine.output.run_report import build_report


@dataclass
class Options:
    run_dir: str = opt("", positional=True, required=True, path=True, help="the run folder whose report/ is rebuilt")


def main(argv: list[str] | None = None) -> int:
    return run_main(_report, argv, lambda: usage("engine.report", "Rebuilds RUN_DIR/report (figures and README.md) "
                                                 "from the run folder alone.", Options,
                                                 line="python -m engine.report RUN_DIR"))


def _report(argv: list[str]) -> None:
    run_dir = parse(argv, Options, "engine.report")[0].run_dir
    print(f"report: {len(build_report(run_dir))} files in {Path(run_dir) / 'report'}")


if __name__ == "__main__":
    sys.exit(main())
