"""`nvjpeg` backend: encoded JPEGs held in (pinned) host memory, decoded in batches on the GPU.

The split's files are read once into one uint8 buffer (pinned when the device is CUDA, so the
decoder's host-to-device copies are DMA transfers). Each step hands a list of views of that
buffer to `torchvision.io.decode_jpeg(..., device="cuda")` (nvJPEG, batched), then the device
augmentation crops, flips, normalizes and casts to channels_last. Needs nothing beyond
torchvision, so it is the GPU path wherever DALI is absent. On a CPU device the same code
decodes with torchvision's CPU decoder in worker threads (that is what CI tests).

Bad data: files that are not JPEGs but readable (PNG, BMP, ...) are decoded once on the host
and kept as pixels; a file unreadable at load time or failing inside a batch becomes a masked
row (zeros, label -1), reported once: the sampler's indices and every other label stay put.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from common.errors import ConfigError
from loaders import images
from loaders.base import Loader


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


class NvjpegLoader(Loader):
    name = "nvjpeg"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.size = self.ds.native_size
        on_gpu = self.device.type == "cuda"
        # One thread issues batched GPU decodes; on the CPU the decode itself needs the cores.
        self.workers = 1 if on_gpu else self.workers
        if self.split.images is not None:
            raise ConfigError("nvjpeg decodes files; in-memory datasets use the tensor loader")
        self._load_bytes(pin=on_gpu)

    def _load_bytes(self, pin: bool) -> None:
        blobs, self.pixels, self.unreadable = [], {}, set()
        self.orientation: dict[int, int] = {}  # EXIF orientation != 1: nvJPEG ignores it, we apply it
        for i, path in enumerate(self.split.files):
            try:
                data = images.read_bytes(path)
                images.check_bytes(data)
                if not _is_jpeg(data):  # nvJPEG reads JPEG only: decode the rest once, here
                    self.pixels[i] = torch.from_numpy(images.decode(data, self.size)).permute(2, 0, 1)
                    data = b""
                elif images.jpeg_orientation(data) != 1:
                    self.orientation[i] = images.jpeg_orientation(data)
            except images.BadImage as exc:
                # Kept as a masked row, not dropped: the sampler's indices stay valid.
                self.bad.add(path, str(exc))
                self.unreadable.add(i)
                data = b""
            blobs.append(data)
        lengths = np.fromiter((len(b) for b in blobs), np.int64, len(blobs))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.encoded = torch.empty(int(self.offsets[-1]), dtype=torch.uint8, pin_memory=pin)
        flat = self.encoded.numpy()
        for b, start in zip(blobs, self.offsets[:-1]):
            flat[start:start + len(b)] = np.frombuffer(b, np.uint8)

    def _view(self, i: int) -> torch.Tensor:
        return self.encoded[int(self.offsets[i]):int(self.offsets[i + 1])]

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        # Files of another size are squashed to the native size, as the plain loader does.
        if img.shape[-2:] == (self.size, self.size):
            return img
        x = F.interpolate(img[None].float(), size=(self.size, self.size), mode="bilinear", antialias=True,
                          align_corners=False)
        return x.round_().clamp_(0, 255).to(torch.uint8)[0]

    def _decode_batch(self, positions) -> tuple[torch.Tensor, list[int]]:
        failed = [row for row, i in enumerate(positions) if int(i) in self.unreadable]
        jpeg_rows = [row for row, i in enumerate(positions) if int(i) not in self.pixels and row not in failed]
        out = torch.zeros((len(positions), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        decoded: list[torch.Tensor | None]
        try:
            decoded = decode_jpeg([self._view(int(positions[r])) for r in jpeg_rows], mode=ImageReadMode.RGB,
                                  device=self.device)
        except RuntimeError:  # one bad file fails the whole call: find it image by image
            decoded = []
            for r in jpeg_rows:
                try:
                    decoded.append(decode_jpeg(self._view(int(positions[r])), mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError as exc:
                    self.bad.add(self.split.files[int(positions[r])], f"decode failed: {str(exc).splitlines()[-1]}")
                    decoded.append(None)
        for r, img in zip(jpeg_rows, decoded):
            if img is None:
                failed.append(r)
            else:
                out[r] = self._fit(images.orient(img, self.orientation.get(int(positions[r]), 1), h_axis=1))
        for row, i in enumerate(positions):
            if int(i) in self.pixels:
                out[row] = self.pixels[int(i)].to(self.device, non_blocking=True)
        return out, failed

    def __iter__(self):
        for step, batch, labels in self.prefetched(self._decode_batch, self.workers):
            yield self.augment(batch, self.key(step)), labels
