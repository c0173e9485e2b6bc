"""`python -m engine.compare RUN [RUN ...] [--out compare.png] [--split test|val]`

Compares finished runs side by side from their folders alone (`metrics.json`, `config.json`):
prints a table of the key figures (accuracy, balanced accuracy, macro F1, macro AUC, expected
calibration error when recorded, epochs, wall time), each with the bootstrap 95% interval the
run recorded (balanced accuracy and AUC), then the options whose values differ between the
runs' resolved configs, then each run's difference from the first on the same test images
with a paired bootstrap interval (narrower than the two runs' own intervals suggest), and writes one figure comparing them (a panel per figure, each run a
point with its interval). RUN may be a glob (`'runs/*'`, quoted or expanded by the shell);
folders without `metrics.json` named directly are refused, those a glob finds are passed over.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import glob
import io
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError
from engine.score.paired import paired_differences, paired_table



@dataclass
class Options:
    out: str = opt("compare.png", path=True, help="the comparison figure to write (PNG)")
    split: str = opt("test", choices=("test", "val"), help="which split's figures to compare")


# (label, metrics.json key under the split, shown as a fraction); intervals are `<key>_ci_low/_high`
FIGURES = (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("macro F1", "f1_macro"),
           ("macro AUC", "auc_macro"), ("ECE", "ece"))
FACTS = (("epochs", "epochs"), ("wall s", "wall_seconds"))
# Options that differ between any two runs and say nothing about the method: where the run went.
IGNORED_OPTIONS = {"run.out", "resolved.loader_reason"}


def find_runs(patterns: list[str]) -> list[Path]:
    """Run folders in the order given (a glob's matches sorted), each once."""
    runs: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = [Path(p) for p in sorted(glob.glob(str(Path(pattern).expanduser())))
                     if (Path(p) / "metrics.json").is_file()]
            if not found:
                raise ConfigError(f"engine.compare: {pattern!r} matches no run folder with metrics.json")
        else:
            path = Path(pattern).expanduser()
            path = path.parent if path.name == "metrics.json" else path
            if not (path / "metrics.json").is_file():
                raise ConfigError(f"engine.compare: {pattern}: not a finished run folder (no metrics.json)")
            found = [path]
        runs += [p for p in found if p.resolve() not in {r.resolve() for r in runs}]
    return runs


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"engine.compare: {path}: not readable JSON ({exc})") from None


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config sections as dotted keys (`optim.lr`)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_options(configs: list[dict]) -> dict[str, list]:
    """Dotted option -> its value in each run, for options not equal in all of them."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat) - IGNORED_OPTIONS) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys
            if len({json.dumps(f.get(k, "<absent>"), sort_keys=True, default=str) for f in flat}) > 1}


def labels_of(runs: list[Path]) -> list[str]:
    """Folder names; the path where two runs share a name (fold-0 of two cv runs)."""
    names = [r.name for r in runs]
    return [str(r) if names.count(r.name) > 1 else r.name for r in runs]


def figure_value(metrics: dict, split: str, key: str) -> tuple[float, float | None, float | None]:
    def number(k):
        v = metrics.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    base = f"{split}.{key}"
    value = number(base)
    return (math.nan if value is None else value), number(f"{base}_ci_low"), number(f"{base}_ci_high")


def _cell(value: float, low: float | None, high: float | None) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def _fact(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    return str(int(value)) if key == "epochs" else f"{value:.1f}"


def table(labels: list[str], metrics: list[dict], split: str) -> str:
    """Runs as rows, figures as columns, aligned for a terminal."""
    header = ["run"] + [f"{split} {name}" for name, _ in FIGURES] + [name for name, _ in FACTS]
    rows = [[label] + [_cell(*figure_value(m, split, key)) for _, key in FIGURES] + [_fact(m, key) for _, key in FACTS]
            for label, m in zip(labels, metrics)]
    return _aligned([header] + rows)


def options_table(labels: list[str], differing: dict[str, list]) -> str:
    if not differing:
        return "options: the same in every run"
    rows = [["option"] + labels] + [[k] + [_short(v) for v in values] for k, values in differing.items()]
    return "options that differ:\n" + _aligned(rows)


def _short(value, width: int = 28) -> str:
    text = "–" if value is None else (value if isinstance(value, str) else json.dumps(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def draw(labels: list[str], metrics: list[dict], split: str, path: Path) -> Path:
    """One PNG: a panel per figure the runs recorded, each run a point with its interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from common.atomic import atomic_write_bytes
    shown = [(name, key) for name, key in FIGURES if any(not math.isnan(figure_value(m, split, key)[0]) for m in metrics)]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown) + 1.5, 0.45 * len(labels) + 1.6),
                             squeeze=False, sharey=True)
    ys = list(range(len(labels)))
    for ax, (name, key) in zip(axes[0], shown):
        for y, m in zip(ys, metrics):
            value, low, high = figure_value(m, split, key)
            err = [[value - low], [high - value]] if low is not None and high is not None else None
            ax.errorbar([value], [y], xerr=err, fmt="o", capsize=3, color=f"C{y % 10}")
        ax.set_title(f"{split} {name}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys, labels, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Runs compared (bars: bootstrap 95% intervals where recorded)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))
    return path


def compare_runs(patterns: list[str], options: dict) -> str:
    if not patterns:
        raise ConfigError("engine.compare: name at least one run folder (or a glob): python -m engine.compare RUN [RUN ...]")
    out = Path(options["out"]).expanduser()
    if out.suffix.lower() != ".png":
        raise ConfigError(f"engine.compare: --out must name a .png file; got {out}")
    if not out.parent.is_dir():
        raise ConfigError(f"engine.compare: --out {out}: folder {out.parent} does not exist")
    runs = find_runs(patterns)
    metrics = [_read_json(r / "metrics.json") for r in runs]
    configs = [_read_json(r / "config.json") if (r / "config.json").is_file() else {} for r in runs]
    labels = labels_of(runs)
    text = table(labels, metrics, options["split"]) + "\n\n" + options_table(labels, differing_options(configs))
    if options["split"] == "test" and len(runs) > 1:  # only the test split's predictions are kept per image
        text += "\n\n" + paired_table(labels[0], *paired_differences(runs, labels))
    print(text)
    draw(labels, metrics, options["split"], out)
    print(f"\ncompare: {len(runs)} runs -> {out}")
    return text


VALUED = {f.name for f in fields(Options)}  # options that take a value; everything else not starting with -- is a run


def split_runs(argv: list[str]) -> tuple[list[str], list[str]]:
    runs, rest, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            rest.append(token)
            name = token[2:].replace("-", "_")
            if "=" not in token and name in VALUED and i + 1 < len(argv):
                rest.append(argv[i + 1])
                i += 1
        else:
            runs.append(token)
        i += 1
    return runs, rest


def _main(argv: list[str]) -> None:
    runs, rest = split_runs(argv)
    compare_runs(runs, asdict(parse(rest, Options, "engine.compare", suggest)[0]))


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("engine.compare", __doc__.strip().split("\n\n", 1)[1], Options,
                                                    line=__doc__.split("`")[1]))


if __name__ == "__main__":
    sys.exit(main())
