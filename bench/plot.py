"""Figures for docs/benchmarks.md: a markdown table and a bar chart of speed-up ratios.

`python -m bench.plot FILE... [--md OUT.md] [--png OUT.png]` reads pytest-benchmark JSON
or bench CLI results (bench/results/*.json) and writes the table (stdout unless --md) and
a horizontal bar chart of every ratio on a log scale, one colour per device kind.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.compare import load_results
from common.cli import run_main, suggest
from common.options import opt, parse, usage


def _cfg(c: dict, *keys: str) -> str:
    return " ".join(f"{k}={c[k]}" for k in keys if k in c and c[k] not in (None, "", False))


def rows(info: dict) -> list[tuple[str, str, str, str]]:
    """(benchmark, device, configuration, figure) rows for one result."""
    kind, device = info.get("device_kind", "?"), info.get("device", "?")
    c, bench = info.get("config", {}), info.get("benchmark", "")
    where = f"{device}"
    if bench == "e2e_epoch":
        ips, setup = info["images_per_second"], info.get("setup_seconds", {})
        r = {**info.get("informational", {}), **info["ratios"]}
        fig = (f"engine {ips['engine']:.1f} img/s vs baseline {ips['baseline']:.1f} img/s = "
               f"**{r['engine_vs_baseline']:.2f}x**")
        if "engine_vs_baseline_per_cpu_second" in r:
            fig += f"; per CPU-second {r['engine_vs_baseline_per_cpu_second']:.2f}x"
        if "engine_vs_baseline_one_epoch_with_setup" in r:
            fig += (f"; with the one-off setup ({setup.get('engine', 0):.0f} s) charged to one epoch "
                    f"{r['engine_vs_baseline_one_epoch_with_setup']:.2f}x")
        return [(f"end-to-end epoch, {c.get('dataset')} {c.get('model')}@{c.get('image_size')}px", where,
                 _cfg(c, "batch_size", "engine_loader", "augment", "amp", "compile", "cuda_graph", "train_images", "rounds"), fig)]
    if bench == "time_to_accuracy":
        target = info["target_test_accuracy"]
        if info["reached"]:
            fig = f"**{info['seconds_to_target']:.1f} s** of training to {target} test accuracy ({info['epochs_to_target']} epochs"
            if info.get("cpu_seconds_to_target") is not None and "cpu" in info.get("device_kind", ""):
                fig += f", {info['cpu_seconds_to_target']:.0f} CPU-seconds"
            fig += f"; best {info['best_test_accuracy']:.3f})"
        else:
            last = info["curve"][-1] if info["curve"] else {"train_seconds": 0, "epoch": 0}
            fig = (f"not reached: best test accuracy {info['best_test_accuracy']:.3f} after {last['train_seconds']:.0f} s "
                   f"({last['epoch']} epochs)")
        return [(f"time to accuracy, {c.get('dataset')} {c.get('model')}@{c.get('image_size')}px", where,
                 _cfg(c, "preset", "batch_size", "epochs", "lr", "amp", "compile", "loader"), fig)]
    if bench == "profile":
        u = info.get("utilisation", {})
        what = "GPU" if info.get("gpu") else "CPU"
        util = f"{u['utilisation_mean']:.0f}% mean {what} utilisation" if "utilisation_mean" in u else "no utilisation samples"
        return [(f"profile, {c.get('dataset')} {c.get('model')}@{c.get('image_size')}px", where,
                 _cfg(c, "batch_size", "loader", "amp", "compile", "cuda_graph"),
                 f"{info['images_per_second']:.0f} img/s, {util}, data wait {100 * info['data_wait_share']:.0f}%")]
    name = bench or info.get("name", "result")
    guarded = [(f"{name}: {key}", where, _cfg(c, "model", "image_size", "batch_size", "loader"), f"**{value:.2f}x**")
               for key, value in info.get("ratios", {}).items()]
    recorded = [(f"{name}: {key}", where, _cfg(c, "model", "image_size", "batch_size", "loader"),
                 f"{value:.2f}x (recorded, not guarded)") for key, value in info.get("informational", {}).items()
                if bench != "e2e_epoch"]
    return guarded + recorded or [(name, where, kind, "")]


def results_table(files: list[str]) -> tuple[str, list[tuple[str, str, float]]]:
    lines = ["| benchmark | device | configuration | figure |", "|---|---|---|---|"]
    bars = []
    for path in files:
        for bench in load_results(path, require_ratios=False)["benchmarks"]:
            info = bench.get("extra_info") or {}
            for row in rows(info):
                lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
            c = info.get("config", {})
            tag = " ".join(str(v) for v in (c.get("engine_loader") or c.get("loader"),
                                            c.get("model") and f"{c['model']}@{c.get('image_size')}") if v)
            for key, value in info.get("ratios", {}).items():
                bars.append((f"{bench['name']}.{key}" + (f" [{tag}]" if tag else ""), info.get("device_kind", "?"),
                             float(value)))
    return "\n".join(lines) + "\n", bars


def plot(bars: list[tuple[str, str, float]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for _, k, _ in bars})
    colours = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(bars) + 1.2))
    ax.barh(range(len(bars)), [v for _, _, v in bars], color=[colours[k] for _, k, _ in bars])
    ax.set_yticks(range(len(bars)), [n.replace("test_", "") for n, _, _ in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("speed-up ratio (higher is better; 1 = same speed)")
    for k in kinds:
        ax.bar(0, 0, color=colours[k], label=k)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


@dataclass
class Options:
    files: list = opt([], positional=True, required=True, help="result files (bench/results/*.json)")
    md: str = opt("", help="write the markdown table here; '' = stdout")
    png: str = opt("", help="write the ratio bar chart here; '' = none")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.plot", __doc__.split("\n")[0], Options,
                                               line="python -m bench.plot FILE... [options]"))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.plot", suggest)[0]
    md, bars = results_table(args.files)
    if args.md:
        Path(args.md).write_text(md)
    else:
        print(md, end="")
    if args.png and bars:
        plot(bars, Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
