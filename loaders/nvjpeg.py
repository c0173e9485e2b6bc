"""`nvjpeg` backend: encoded JPEGs held in (pinned) host memory, decoded in batches on the GPU.

The split's files are read once into one uint8 buffer (pinned when the device is CUDA, so the
decoder's host-to-device copies are DMA transfers). Each step hands a list of views of that
buffer to `torchvision.io.decode_jpeg(..., device="cuda")` (nvJPEG, batched), then the device
augmentation crops, flips, normalizes and casts to channels_last. Needs nothing beyond
torchvision, so it is the GPU path wherever DALI is absent. On a CPU device the same code
decodes with torchvision's CPU decoder in worker threads (that is what CI tests).

Stream ordering on CUDA (the reason for `DecodeStream`): torchvision allocates the decoded
images on the caller's current stream but nvJPEG writes them on its own stream. Decoding with
the training stream current lets nvJPEG overwrite memory that queued training kernels still
read (pytorch/vision PR 9606: 199/200 corrupted iterations on an H100). So the decode thread
makes a stream of its own current, waits for that stream's earlier work before each decode (a
host wait in the decode thread, not in the training loop), copies the images into one batch
buffer with one op on that stream, and hands the buffer over with an event the training stream
waits on plus `record_stream`, so the allocator keeps it until the training stream is done.

Bad data: files that are not JPEGs but readable (PNG, BMP, ...) are decoded once on the host
and kept as pixels in one host tensor; a file unreadable at load time or failing inside a batch
becomes a masked row (zeros, label -1), reported once: the sampler's indices and every other
label stay put. A batch without any JPEG (a PNG dataset) never calls the decoder.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from common.errors import ConfigError
from loaders import images
from loaders.base import Loader


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


@dataclass
class Decoded:
    """One batch as the decode thread hands it over: `ready` is recorded on the decode stream."""
    images: torch.Tensor
    failed: list[int]
    ready: torch.cuda.Event | None = None


class DecodeStream:
    """The decode thread's own CUDA stream (a no-op on the CPU)."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def quiesce(self) -> None:
        # Sync point (decode thread only): every earlier op on this stream is done, so memory it
        # freed can be handed to nvJPEG, which writes on another stream without waiting for ours.
        if self.stream is not None:
            self.stream.synchronize()

    def finish(self, batch: Decoded) -> Decoded:
        if self.stream is not None:
            batch.ready = torch.cuda.Event()
            batch.ready.record(self.stream)
        return batch

    @staticmethod
    def hand_over(batch: Decoded) -> torch.Tensor:
        """On the consuming (training) thread: order its stream after the decode, keep the buffer
        alive until the consumer's queued reads are done."""
        if batch.ready is not None:
            consumer = torch.cuda.current_stream(batch.images.device)
            consumer.wait_event(batch.ready)
            batch.images.record_stream(consumer)
        return batch.images


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
        self.decode_stream = DecodeStream(self.device)
        self._load_bytes(pin=on_gpu)

    def _load_bytes(self, pin: bool) -> None:
        blobs, pixels, self.unreadable = [], [], set()
        self.pixel_row = np.full(len(self.split.files), -1, np.int64)  # dataset index -> row of pixel_store
        self.orientation: dict[int, int] = {}  # EXIF orientation != 1: nvJPEG ignores it, we apply it
        for i, path in enumerate(self.split.files):
            try:
                data = images.read_bytes(path)
                images.check_bytes(data)
                if not _is_jpeg(data):  # nvJPEG reads JPEG only: decode the rest once, here
                    self.pixel_row[i] = len(pixels)
                    pixels.append(torch.from_numpy(np.array(images.decode(data, self.size))).permute(2, 0, 1))
                    data = b""
                elif images.jpeg_orientation(data) != 1:
                    self.orientation[i] = images.jpeg_orientation(data)
            except images.BadImage as exc:
                # Kept as a masked row, not dropped: the sampler's indices stay valid.
                self.bad.add(path, str(exc))
                self.unreadable.add(i)
                data = b""
            blobs.append(data)
        self.pixel_store = torch.stack(pixels) if pixels else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        if pin and pixels:
            self.pixel_store = self.pixel_store.pin_memory()
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

    def _decode_jpegs(self, positions, rows: list[int]) -> list[torch.Tensor | None]:
        if not rows:  # decode_jpeg([]) raises ValueError: a batch of PNGs needs no decoder
            return []
        try:
            return decode_jpeg([self._view(int(positions[r])) for r in rows], mode=ImageReadMode.RGB,
                               device=self.device)
        except RuntimeError:  # one bad file fails the whole call: find it image by image
            decoded = []
            for r in rows:
                try:
                    decoded.append(decode_jpeg(self._view(int(positions[r])), mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError as exc:
                    self.bad.add(self.split.files[int(positions[r])], f"decode failed: {str(exc).splitlines()[-1]}")
                    decoded.append(None)
            return decoded

    @staticmethod
    def _put_rows(out: torch.Tensor, rows: list[int], parts: list[torch.Tensor] | torch.Tensor) -> None:
        """The rows into the batch buffer in one op on the current (decode) stream: a stack
        straight into it when the batch is whole, an index_copy_ otherwise."""
        if len(rows) == len(out) and isinstance(parts, list):
            torch.stack(parts, out=out)
        elif rows:
            block = torch.stack(parts) if isinstance(parts, list) else parts
            index = torch.as_tensor(rows, dtype=torch.int64).to(out.device, non_blocking=True)
            out.index_copy_(0, index, block.to(out.device, non_blocking=True))

    def _decode_batch(self, positions) -> tuple[Decoded, list[int]]:
        failed = [row for row, i in enumerate(positions) if int(i) in self.unreadable]
        pixel_rows = [row for row, i in enumerate(positions) if self.pixel_row[int(i)] >= 0]
        jpeg_rows = [row for row, i in enumerate(positions)
                     if self.pixel_row[int(i)] < 0 and int(i) not in self.unreadable]
        with self.decode_stream.context():
            self.decode_stream.quiesce()
            # One buffer per batch, allocated on the decode stream and handed over (record_stream);
            # zeros because failed rows stay in it (masked by their label).
            out = torch.zeros((len(positions), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
            decoded = self._decode_jpegs(positions, jpeg_rows)
            failed += [r for r, img in zip(jpeg_rows, decoded) if img is None]
            good = [(r, self._fit(images.orient(img, self.orientation.get(int(positions[r]), 1), h_axis=1)))
                    for r, img in zip(jpeg_rows, decoded) if img is not None]
            if good:
                self._put_rows(out, [r for r, _ in good], [img for _, img in good])
            if pixel_rows:
                store_rows = torch.from_numpy(self.pixel_row[[int(positions[r]) for r in pixel_rows]])
                staged = self.pixel_store[store_rows]  # a host gather, then one host-to-device copy
                self._put_rows(out, pixel_rows, staged.pin_memory() if self.pixel_store.is_pinned() else staged)
            return self.decode_stream.finish(Decoded(out, sorted(failed))), sorted(failed)

    def decoded_batches(self):
        """(step, uint8 NCHW batch ordered on the current stream, labels): before augmentation."""
        for step, batch, labels in self.prefetched(self._decode_batch, self.workers):
            yield step, DecodeStream.hand_over(batch), labels

    def __iter__(self):
        for step, batch, labels in self.decoded_batches():
            yield self.augment(batch, self.key(step)), labels
