"""`tensor` backend: the whole split decoded once into one uint8 NHWC tensor on the device.

Batches are a device gather plus the device augmentation: no host work per step at all
(the airbench approach). The fastest path whenever the decoded data fits in device memory.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from loaders import images
from loaders.base import PAD_LABEL, Loader, row_mask


def decode_all(files: list[str], size: int, workers: int, bad) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x size x size x 3, bool N: decoded); files that fail are reported, their rows zero."""
    out = np.empty((len(files), size, size, 3), np.uint8)

    def work(i):
        try:
            out[i] = images.decode(images.read_bytes(files[i]), size)
            return True
        except images.BadImage as exc:
            bad.add(files[i], str(exc))
            return False

    with ThreadPoolExecutor(max(1, workers)) as pool:
        ok = np.fromiter(pool.map(work, range(len(files)), chunksize=32), bool, len(files))
    out[~ok] = 0
    return out, ok


class TensorLoader(Loader):
    name = "tensor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed: torch.Tensor | None = None  # bool per row: decode failed at load time
        split = self.split
        if split.images is not None:
            array = split.images
        else:
            array, ok = decode_all(split.files, self.ds.native_size, self.workers, self.bad)
            if not ok.all():
                # Rows stay, so the sampler's indices (drawn over the whole split) still match;
                # a failed row's label becomes PAD_LABEL in every batch: no loss, no metric, no shift.
                self.failed = torch.as_tensor(~ok, device=self.device)
        # NHWC storage viewed as NCHW: exactly the channels_last layout.
        self.nhwc = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def __iter__(self):
        order, real = self.epoch_order()
        for step in range(self.start_step, self.steps):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            batch = self.nhwc.index_select(0, idx).permute(0, 3, 1, 2)
            labels = self.batch_labels(order, real, step)
            if self.failed is not None:
                labels = torch.where(row_mask(self.failed[idx], labels), torch.full_like(labels, PAD_LABEL), labels)
            yield self.augment(batch, self.key(step)), labels
        self.start_step = 0
