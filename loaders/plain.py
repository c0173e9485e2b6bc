"""`plain` backend: JPEG decode (simplejpeg, PIL fallback) in worker threads, the fallback path.

Each worker decodes a whole batch into its own (pinned, when the device is CUDA) uint8 NHWC
buffer; a bounded window of batches is in flight so decode overlaps training. The copy to the
device is non-blocking and the augmentation runs there. A file that fails to decode becomes a
masked row (label -1) and is reported once: the batch keeps its shape and no label shifts.
"""
from __future__ import annotations


import torch

from loaders import images
from loaders.base import Loader


class PlainLoader(Loader):
    name = "plain"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pin = self.device.type == "cuda"
        self.size = self.ds.native_size

    def _decode_batch(self, positions) -> tuple[torch.Tensor, list[int]]:
        buf = torch.empty((len(positions), self.size, self.size, 3), dtype=torch.uint8, pin_memory=self.pin)
        arr, failed = buf.numpy(), []
        for row, i in enumerate(positions):
            if self.split.images is not None:
                arr[row] = self.split.images[i]
                continue
            path = self.split.files[i]
            try:
                arr[row] = images.decode(images.read_bytes(path), self.size)
            except images.BadImage as exc:
                self.bad.add(path, str(exc))
                arr[row] = 0
                failed.append(row)
        return buf, failed

    def __iter__(self):
        for step, buf, labels in self.prefetched(self._decode_batch, self.workers):
            batch = buf.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            yield self.augment(batch, self.key(step)), labels
