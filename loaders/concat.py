"""Several splits as one (engine.cv pools train/val/test before dealing folds; evaluate and
predict score several splits in one pass)."""
from __future__ import annotations

import numpy as np

from loaders.datasets import Split


def concat_splits(parts: list[Split]) -> Split:
    def join(attr):
        values = [getattr(p, attr) for p in parts]
        if any(v is None for v in values):
            return None
        return sum(values, []) if attr == "files" else np.concatenate(values)
    return Split(labels=np.concatenate([p.labels for p in parts]), files=join("files"),
                 images=join("images"), groups=join("groups"), meta=join("meta"))
