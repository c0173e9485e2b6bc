"""`python -m engine.evaluate --checkpoint DIR --data PATH [--out DIR] [--tta] [--split test|val|train|all]
[--device auto|cpu|cuda] [--batch-size N] [--loader NAME] [--amp]`

Scores a trained checkpoint on a dataset with the same classes and writes `metrics.json`
with the same `test.*` keys training writes (bootstrap intervals included, and the checkpoint's
stored prior correction and threshold applied as training applied them: docs/plan.md), the test
predictions and a report. The default `--out` is `<checkpoint>/eval-<data name>[-tta]`,
so the training run's own metrics are never overwritten.
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.constants import BOOTSTRAP_RESAMPLES
from engine import report
from engine.atomic import atomic_write_json
from engine.env import device_name, versions
from engine.evaluation import summarized
from engine.inference import cli_main, score_checkpoint

OPTIONS = {"checkpoint": "", "data": "", "out": "", "tta": False, "split": "test", "device": "auto",
           "batch_size": 0, "loader": "auto", "amp": False}


def default_out(options: dict) -> Path:
    name = Path(options["data"]).stem or "data"
    suffix = ("-" + options["split"] if options["split"] != "test" else "") + ("-tta" if options["tta"] else "")
    return Path(options["checkpoint"]) / f"eval-{name}{suffix}"


def evaluate(options: dict) -> dict:
    scored = score_checkpoint(options)
    run, seconds = scored.run, scored.seconds
    result = summarized(run, scored.scores, bootstrap=BOOTSTRAP_RESAMPLES)
    test, cm = result.metrics, result.cm
    metrics = {f"test.{k}": v for k, v in test.items()} | {
        "checkpoint": str(options["checkpoint"]), "data": str(options["data"]), "split": options["split"],
        "tta": options["tta"], "model": run.cfg.model.name, "image_size": run.resolved.image_size,
        "classes": run.dataset.classes, "device": device_name(run.device), "versions": versions(),
        "wall_seconds": seconds, "test.images_per_second": test["n"] / max(seconds, 1e-9),
    }
    out = Path(options["out"]) if options["out"] else default_out(options)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    counts = {"evaluated": [int(v) for v in cm.sum(1).tolist()]}
    report.save_test_outputs(out, result.probs, result.labels, result.loader.split, counts)
    report.build_or_warn(out)
    print(f"test: accuracy {test['accuracy']:.4f}  balanced_accuracy {test['balanced_accuracy']:.4f}  "
          f"f1_macro {test['f1_macro']:.4f}  auc_macro {test['auc_macro']:.4f}  "
          f"(n={test['n']}, split {options['split']}, tta {'on' if options['tta'] else 'off'}, {seconds:.1f}s) -> {out}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, __doc__, OPTIONS, ("checkpoint", "data"), "engine.evaluate", evaluate)


if __name__ == "__main__":
    sys.exit(main())
