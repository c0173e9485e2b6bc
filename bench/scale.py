"""How the start of a run grows with the dataset: time to the first training step, its phases,
the step throughput and the peak memory, for one `engine.train` run stopped after --steps steps.

`python -m bench.scale --data DIR --steps N [--out JSONL] [train options]` runs the real
`engine.train` in this process (so the command a user types, the plan included unless
`--run.plan off` is passed) and stops it the way SIGTERM does after N steps (state saved, no
evaluation). It prints one JSON line, appended to --out when given:

- seconds from process start to the end of the first step (`first_step_s`), and the seconds
  spent in each phase before it: reading the label CSV (`listing_s`), the header check of
  every image (`verify_s`), the split (`split_s`), the plan's fingerprint and calibration
  (`fingerprint_s`, `plan_s`), the data identity (`identity_s`), building the loaders
  (`loaders_s`);
- `images_per_s`: training images per second over steps 2..N (the first carries warm-up),
  and `epoch_s_estimate`: the train split at that rate;
- `peak_rss_mb`: the process's peak resident memory (ru_maxrss: decode threads included);
- the loader chosen and why, the sizes, and the machine's load average at the end (the
  2-core machine is shared: figures are "on a loaded machine").

The dataset comes from bench/make_isic_scale.py (never committed). Documented run
(bench/results/cpu-scale-isic.md), the plan choosing model, size and batch as for a user:

    python bench/make_isic_scale.py --sizes 40000,100000,400000 --out /work/scale-data
    for n in 40k 100k 400k; do
        python -m bench.scale --data /work/scale-data/isic$n --steps 20 --out bench/results/cpu-scale-isic.jsonl --device cpu
    done
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import time
from dataclasses import dataclass

from common.options import opt

START = time.perf_counter()  # before the heavy imports: they are part of a user's wait

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


class Phases:
    """Seconds spent inside named functions (wrapped where their callers look them up)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, module, attr: str, name: str) -> None:
        inner = getattr(module, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        setattr(module, attr, timed)


def _instrument(phases: Phases) -> None:
    import engine.run.build
    import common.data_identity
    import engine.plan.fingerprint_data
    import engine.plan.plan
    import loaders.base
    import loaders.csv_table
    import loaders.images
    import loaders.splits
    phases.wrap(loaders.csv_table, "read_listing", "listing_s")
    phases.wrap(loaders.images, "scan", "verify_s")
    phases.wrap(loaders.splits, "train_val_test", "split_s")
    phases.wrap(engine.plan.fingerprint_data, "fingerprint", "fingerprint_s")
    phases.wrap(engine.plan.plan, "planned", "plan_s")
    phases.wrap(common.data_identity, "of", "identity_s")
    phases.wrap(loaders.base, "build_loader", "loaders_s")
    phases.wrap(engine.run.build, "load_dataset", "load_dataset_s")


def _stop_after(steps: int, stamps: list[float]):
    """A runner StopFlag that notes the time after every step and asks to stop after `steps`."""
    from engine.run import runner

    class StopAfter(runner.StopFlag):
        @property
        def signal(self):
            stamps.append(time.perf_counter())  # the runner reads the flag once after every step
            return "SIGTERM" if len(stamps) >= steps else None

        @signal.setter
        def signal(self, value):
            pass

    runner.StopFlag = StopAfter


@dataclass
class Options:
    steps: int = opt(20, ge=2, help="training steps before the run is stopped (the first carries warm-up)")
    out: str = opt("", path=True, help="JSONL file the result line is appended to; '' = print only")


def main(argv: list[str] | None = None) -> int:
    from common.cli import run_main
    from common.options import usage
    from engine.options.config import config_usage as train_usage
    box = []
    help_text = lambda: usage("bench.scale", __doc__.strip().split("\n\n", 1)[0], Options,  # noqa: E731
                              "train options (as engine.train):\n" + train_usage().split("\n", 2)[2],
                              line="python -m bench.scale --data DIR [--steps N] [--out JSONL] [train options]")
    code = run_main(lambda args: box.append(_measure(args)), sys.argv[1:] if argv is None else argv, help_text)
    return code if code or not box else box[0]


def _measure(argv: list[str]) -> int:
    from common.cli import suggest
    from common.options import take
    own, _, rest = take(argv, Options, "bench.scale", suggest)
    steps, out = own.steps, own.out or None
    data = next((rest[i + 1] for i, t in enumerate(rest[:-1]) if t == "--data"), None)
    phases, stamps, loader = Phases(), [], {}
    _instrument(phases)
    _stop_after(steps, stamps)
    import loaders.base
    resolve = loaders.base.choose_backend

    def noted(*args, **kwargs):
        loader["name"], loader["why"] = resolve(*args, **kwargs)
        return loader["name"], loader["why"]

    loaders.base.choose_backend = noted
    import engine.run.build
    engine.run.build.loaders.choose_backend = noted
    from engine.train import main as train_main
    run_dir = tempfile.mkdtemp(prefix="medtrain-scale-")
    code = train_main(rest + ["--out", run_dir, "--train.log_interval", "1", "--wandb", "disabled",
                              "--train.progress", "off"])
    config = json.loads((Path(run_dir) / "config.json").read_text()) if (Path(run_dir) / "config.json").exists() else {}
    batch = config.get("data", {}).get("batch_size", 0)
    stamps = stamps[:steps]  # the runner reads the flag once more while it stops (after saving): not a step
    rate = (len(stamps) - 1) * batch / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    n_train = _train_size(run_dir)
    row = {"data": data, "exit": code, "steps": len(stamps), "batch_size": batch,
           "first_step_s": round(stamps[0] - START, 2) if stamps else None,
           **{k: round(v, 2) for k, v in sorted(phases.seconds.items())},
           "images_per_s": round(rate, 1), "n_train": n_train,
           "epoch_s_estimate": round(n_train / rate, 1) if n_train and rate == rate else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "loader": loader.get("name"), "loader_reason": loader.get("why"),
           "model": config.get("model", {}).get("name"), "image_size": config.get("data", {}).get("image_size"),
           "load_average": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count(),
           "command": "python -m bench.scale " + " ".join(argv)}
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")
    return 0 if code in (0, None) or stamps else 1


def _train_size(run_dir: str) -> int:
    """The train split's size, from the checkpoint's data identity."""
    import torch
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        return 0
    saved = torch.load(path, map_location="cpu", weights_only=False)
    rows = saved.get("data_identity", {}).get("files", [])
    return sum(1 for r in rows if r[1] == "train")


if __name__ == "__main__":
    sys.exit(main())
