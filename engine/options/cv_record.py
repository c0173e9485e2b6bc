"""`OUT/cv_options.json`: the options and data an engine.cv folder's folds were trained with.

engine.cv skips folds that already finished, which is only right when they were trained
with the same folds, seed, training options and data. The first run writes this record
before its first fold; a rerun into the same folder compares and refuses (one line naming
each difference) instead of mixing folds of two experiments under one summary. Options that
change nothing in the result (progress bar, tracking, threads, logging interval) may differ.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import ConfigError
from common import data_identity
from common.atomic import atomic_write_json
from engine.options.config import FIELDS, Config

NAME = "cv_options.json"
NOT_COMPARED = frozenset(k for k, f in FIELDS.items() if f.metadata.get("compared") is False)  # opt(compared=False)


def _options(k: int, cfg: Config) -> dict:
    flat = {f"{s}.{key}": v for s, values in cfg.to_dict().items() for key, v in values.items()}
    flat = {key: v for key, v in flat.items() if key not in NOT_COMPARED}
    if flat["data.path"] != "synthetic":
        flat["data.path"] = str(Path(flat["data.path"]).expanduser().resolve())
    return {"folds": k} | flat


def check_or_write(root: Path, k: int, cfg: Config, ds) -> None:
    """Record the options of a new cv folder, or refuse a folder trained with others."""
    options, identity = _options(k, cfg), data_identity.of(ds)
    path = root / NAME
    if not path.exists():
        if any(root.glob("fold*/metrics.json")):
            raise ConfigError(f"engine.cv: {root} holds finished folds but no {NAME} recording their options; "
                              "use another --out (or remove the folds) so they are not mixed with this run's")
        atomic_write_json(path, {"options": options, "data": identity})
        return
    try:
        recorded = json.loads(path.read_text())
        before = recorded["options"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"engine.cv: {path} is unreadable; use another --out") from None
    differ = [f"--{key} {before.get(key)!r} there, {value!r} now" if key != "folds" else
              f"--folds {before.get(key)} there, {value} now"
              for key, value in options.items() if before.get(key) != value]
    if differ:
        raise ConfigError(f"engine.cv: {root} holds folds trained with other options ({'; '.join(differ)}); "
                          "use another --out, or the same options to finish its folds")
    changed = data_identity.differences(recorded.get("data") or identity, identity)
    if changed:
        raise ConfigError(f"engine.cv: the data changed since the folds in {root} were trained ({changed}); "
                          "use another --out")
