"""`baseline` backend: the pipeline our users write today, kept as the yardstick.

A torch `Dataset` that opens each file with PIL, torchvision transforms on the CPU
(RandomResizedCrop, flips, ToTensor, Normalize), a `DataLoader` with worker processes and
fp32 batches copied to the device. Nothing here is tuned: it is what speedups are measured
against (`python -m bench.loaders --loader baseline`). Never chosen by `--loader auto`.

It keeps the engine's contract all the same: the sampler's order, a fixed batch shape, padded
evaluation rows and unreadable files masked with label -1 (reported once by the main process,
since workers are separate processes), never a shifted label.
"""
from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from loaders import images
from loaders.base import Loader, host_indices
from loaders.fork_safe import fork_safe_gc


class RandomRot90:
    """Rotation by a random multiple of 90 degrees (the engine's `rot90` option)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(4, ())), dims=(1, 2))


def build_transform(spec) -> T.Compose:
    if spec.train:
        steps = [T.RandomResizedCrop(spec.out_size, scale=(spec.scale_min, 1.0), ratio=spec.ratio)]
        steps += [T.RandomHorizontalFlip()] if spec.hflip else []
        steps += [T.RandomVerticalFlip()] if spec.vflip else []
        if spec.jitter > 0:
            steps.append(T.ColorJitter(spec.jitter, spec.jitter, spec.jitter))
        steps.append(T.ToTensor())
        steps += [RandomRot90()] if spec.rot90 else []
    else:
        steps = [T.Resize((round(spec.out_size / spec.eval_crop),) * 2), T.CenterCrop(spec.out_size), T.ToTensor()]
    return T.Compose(steps + [T.Normalize(spec.mean, spec.std)])


class FileDataset(Dataset):
    """(image tensor, position, error): a failed file gives zeros and its reason, not a crash."""

    def __init__(self, split, transform, out_size: int):
        self.split, self.transform, self.out_size = split, transform, out_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        try:
            if self.split.images is not None:
                img = Image.fromarray(self.split.images[i])
            else:  # the engine's decode rules (EXIF orientation, deep and float images), not PIL's defaults
                img = Image.fromarray(images.decode(images.read_bytes(self.split.files[i]), None))
            return self.transform(img.convert("RGB")), i, ""
        except Exception as exc:  # PIL raises many types; any of them means "skip this file"
            return torch.zeros(3, self.out_size, self.out_size), i, f"{type(exc).__name__}: {exc}"


class BaselineLoader(Loader):
    name = "baseline"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset = FileDataset(self.split, build_transform(self.spec), self.image_size)

    def __iter__(self):
        order, real = self.epoch_order()
        order_np = host_indices(order)
        bs = self.batch_size
        # The order arrives whole-batch padded, so the DataLoader never yields a short batch.
        remaining = order_np[self.start_step * bs:self.steps * bs].tolist()
        loader = DataLoader(self.dataset, batch_size=bs, sampler=remaining, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", drop_last=False)
        with fork_safe_gc():
            batches = iter(loader)  # starts the worker processes
        for step, (batch, positions, errors) in enumerate(batches, start=self.start_step):
            failed = [row for row, err in enumerate(errors) if err]
            for row in failed:
                path = self.split.files[positions[row]] if self.split.files is not None else f"row {positions[row]}"
                self.bad.add(path, errors[row])
            labels = self.batch_labels(order, real, step, failed)
            images_out = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            yield images_out, labels
        self.start_step = 0
