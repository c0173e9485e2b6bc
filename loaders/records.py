"""What a loaded dataset is: train/val/test `Split`s of files or in-memory images, with labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Split:
    labels: np.ndarray                      # int64, one per sample; multi-label: float32 N x K 0/1
    files: list[str] | None = None          # absolute paths (file datasets)
    images: np.ndarray | None = None        # uint8 NHWC (in-memory datasets)
    groups: np.ndarray | None = None        # lesion/patient ids, when known
    meta: np.ndarray | None = None          # float32 tabular features (metadata fusion)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "Split":
        return Split(
            labels=self.labels[idx],
            files=[self.files[i] for i in idx] if self.files is not None else None,
            images=self.images[idx] if self.images is not None else None,
            groups=self.groups[idx] if self.groups is not None else None,
            meta=self.meta[idx] if self.meta is not None else None,
        )


@dataclass
class Dataset:
    name: str
    source: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    native_size: int                        # side of the stored images (decode size)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    partition: str = ""                     # how train/val/test were made, in words
    official_split: bool = False            # val/test are the file's own (a MedMNIST benchmark's) partition

    @property
    def num_classes(self) -> int:
        return len(self.classes)   # multi-label: the number of findings

    @property
    def multilabel(self) -> bool:
        """Several findings per image (loaders/multilabel.py): labels are an N x K 0/1 matrix."""
        return self.train.labels.ndim == 2

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]
