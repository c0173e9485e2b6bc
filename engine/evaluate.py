"""`python -m engine.evaluate --checkpoint DIR --data PATH [--out DIR] [--tta | --no-tta] [--split auto|test|val|train|all]
[--device auto|cpu|cuda] [--batch-size N] [--loader NAME] [--amp]`

Scores a trained checkpoint on a dataset with the same classes and writes `metrics.json`
with the same `test.*` keys training writes (bootstrap intervals included, and the checkpoint's
stored prior correction and threshold applied as training applied them: docs/plan.md), the test
predictions and a report. The default `--split auto` scores the run's test split on the
data it was trained on, and every image of any other dataset. The default `--out` is
`<checkpoint>/eval-<data name>[-split][-tta]` (`-2`, `-3`, ... when that folder holds the
evaluation of other data with the same name: engine/output/eval_folder.py), so the training run's
own metrics and other evaluations are never overwritten. TTA follows the run's own setting
(the plan turns it on when every flip and quarter turn holds) unless --tta or --no-tta is given.
`--checkpoint` may be an engine.cv folder: the K fold models scored as one ensemble
(engine/score/ensemble.py; other data only); a fold's folder scores that fold's own test split.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import sys
from dataclasses import dataclass
from pathlib import Path

from common.constants import BOOTSTRAP_RESAMPLES
from engine.score import data_scope, metric_validity
from engine.output import eval_folder, run_report, saliency
from common.atomic import atomic_write_json
from engine.run.env import device_name, versions
from engine.score.evaluation import summarized
from common.options import opt
from engine.score.inference import ScoreOptions, cli_main, score_checkpoint


@dataclass
class Options(ScoreOptions):
    out: str = opt("", path=True, help="the folder written; '' = <checkpoint>/eval-<data name>[-split][-tta]")


def evaluate_checkpoint(options: dict) -> dict:
    scored = score_checkpoint(options, "engine.evaluate")
    run, seconds = scored.run, scored.seconds
    result = summarized(run, scored.scores, bootstrap=BOOTSTRAP_RESAMPLES)
    test, cm = result.metrics, result.cm
    metrics = {f"test.{k}": v for k, v in test.items()} | {
        "checkpoint": str(options["checkpoint"]), "data": str(options["data"]), "split": options["split"],
        "tta": options["tta"], "model": run.cfg.model.name, "image_size": run.resolved.image_size,
        "classes": run.dataset.classes, "device": device_name(run.device), "versions": versions(),
        "wall_seconds": seconds, "test.images_per_second": test["n"] / max(seconds, 1e-9),
    }
    metric_validity.mark(metrics, "test", result.labels.cpu().numpy(), run.dataset.classes)  # sync point: once
    if (run.decision or {}).get("temperature_note"):  # the checkpoint kept T = 1, and why
        metrics["calibration.note"] = run.decision["temperature_note"]
    if "ensemble" in (run.decision or {}):  # a cv folder: the mean of its folds (engine/score/ensemble.py)
        metrics["ensemble_folds"] = run.decision["ensemble"]["folds"]
    usual = data_scope.default_split(scored.restored, options["data"])
    suffix = ("-" + options["split"] if options["split"] != usual else "") + ("-tta" if options["tta"] else "")
    out = eval_folder.claim(options["checkpoint"], options["data"], suffix, options["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    per_class = cm[:, 1].sum(-1) if cm.ndim == 3 else cm.sum(1)  # multi-label: positives per finding
    counts = {"evaluated": [int(v) for v in per_class.tolist()]}
    run_report.save_test_outputs(out, result.probs, result.labels, result.loader.split, counts,
                              uncalibrated=result.uncalibrated)
    saliency.save_sample_or_warn(out, run.model, scored.restored.model_name, run.resolved, run.device, run.dataset,
                                 result)
    run_report.build_or_warn(out)
    shown = metric_validity.shown
    print(f"test: accuracy {shown(metrics['test.accuracy'])}  balanced_accuracy {shown(metrics['test.balanced_accuracy'])}  "
          f"f1_macro {shown(metrics['test.f1_macro'])}  auc_macro {shown(metrics['test.auc_macro'])}  "
          f"(n={test['n']}, split {options['split']}, tta {'on' if options['tta'] else 'off'}, {seconds:.1f}s) -> {out}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, __doc__, Options, "engine.evaluate", evaluate_checkpoint)


if __name__ == "__main__":
    sys.exit(main())
