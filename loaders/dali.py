"""`dali` backend: NVIDIA DALI decodes and augments; our sampler decides the order.

An `external_source` callback feeds the pipeline the encoded bytes of the files in the order
`epoch_order()` gives (the engine's sampler: uniform, class-balanced, sharded for DDP), one
whole batch per call, so DALI's own readers never pick an order. The pipeline:

  train: decoders.image_random_crop (decode fused with random-resized-crop; nvJPEG with
         `device="mixed"`) -> resize to S x S -> [colour twist] -> dihedral flips/rot90
         -> crop_mirror_normalize (mean/std, fp16 or fp32, HWC)
  eval:  decode -> resize to S/c -> centre crop S x S -> normalize (same as the other backends)

HWC output viewed as NCHW is exactly torch's channels_last layout. With a CUDA device the
pipeline runs with `device="mixed"` on that GPU; on a CPU device with `device_id=None`
(CPU decoders), which is how CI runs it. Prefetching (`prefetch_queue_depth`) overlaps decode
with training. Random draws use DALI's generator seeded from `--seed`, so they differ from the
torch backends' draws (same distributions) and a mid-epoch resume restarts that stream.

Every file is read and checked once, in threads, when the loader is built (the split's encoded
bytes stay in host memory, as the nvjpeg backend keeps them): the callback runs on the training
thread at each batch and only picks arrays. Bad data: every file's bytes are checked on the host before DALI sees them (empty, truncated,
not an image: the same checks as the dataset scan); a bad file is replaced by a 1-pixel JPEG,
its row masked with label -1 and the file reported once. If DALI still fails on a batch, the
batch's files are fully decoded on the host to find the culprit, which is then skipped the
same way, and the pipeline is rebuilt at that step: never a crash mid-epoch, never a shift.
DICOM files (which DALI does not read) are decoded on the host when read (loaders/dicom.py) and
handed to DALI as PNG bytes.
"""
from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from common.errors import ConfigError
from loaders import dicom, images
from loaders.base import Loader, host_indices

log = logging.getLogger("medtrain.loaders")


def _png(pixels: np.ndarray) -> bytes:
    """Lossless bytes DALI's decoder reads, for pixels decoded on the host (DICOM)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _placeholder_jpeg() -> np.ndarray:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    return np.frombuffer(buf.getvalue(), np.uint8)


class DaliLoader(Loader):
    name = "dali"
    prefetch = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.split.files is None:
            raise ConfigError("dali decodes files; in-memory datasets use the tensor loader")
        self.threads = self.workers
        self.placeholder = _placeholder_jpeg()
        self.known_bad: set[int] = set()
        self.blobs = self._read_all()
        self.pipe, self.pipe_dirty = None, False
        self.plan: list[tuple[int, np.ndarray]] = []
        self.failed_rows: dict[int, list[int]] = {}

    # -- pipeline ---------------------------------------------------------------------------
    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        spec, size = self.spec, self.image_size
        gpu = self.device.type == "cuda"
        half = spec.out_dtype in (torch.float16, torch.bfloat16)
        mean = [255 * m for m in spec.mean]
        std = [255 * s for s in spec.std]
        conditionals = spec.train and spec.rot90

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads,
                      device_id=(self.device.index or 0) if gpu else None, seed=self.opts.seed,
                      prefetch_queue_depth=self.prefetch, enable_conditionals=conditionals)
        def pipeline():
            encoded = fn.external_source(source=self._next_batch, batch=True, dtype=types.UINT8, name="jpegs")
            decoder = "mixed" if gpu else "cpu"
            if spec.train:
                # adjust_orientation: EXIF orientation applied, as every other backend does
                img = fn.decoders.image_random_crop(encoded, device=decoder, output_type=types.RGB,
                                                    adjust_orientation=True,
                                                    random_area=[spec.scale_min, 1.0],
                                                    random_aspect_ratio=list(spec.ratio), num_attempts=10)
                img = fn.resize(img, resize_x=size, resize_y=size)
                if spec.jitter > 0:
                    j = spec.jitter
                    img = fn.color_twist(img, brightness=fn.random.uniform(range=[1 - j, 1 + j]),
                                         contrast=fn.random.uniform(range=[1 - j, 1 + j]),
                                         saturation=fn.random.uniform(range=[1 - j, 1 + j]))
                hflip = fn.random.coin_flip(dtype=types.INT32) if spec.hflip else 0
                vflip = fn.random.coin_flip(dtype=types.INT32) if spec.vflip else 0
                if spec.rot90:
                    # Rotations by k*90 as transpose + flips: k=1 T,H; k=2 H,V; k=3 T,V.
                    k = fn.random.uniform(values=[0, 1, 2, 3], dtype=types.INT32)
                    if (k == 1) | (k == 3):
                        img = fn.transpose(img, perm=[1, 0, 2], output_layout="HWC")
                    hflip = hflip ^ ((k == 1) | (k == 2))
                    vflip = vflip ^ (k >= 2)
                if spec.vflip or spec.rot90:
                    img = fn.flip(img, horizontal=0, vertical=vflip)
                mirror = hflip
            else:
                img = fn.decoders.image(encoded, device=decoder, output_type=types.RGB, adjust_orientation=True)
                outer = round(size / spec.eval_crop)
                img = fn.resize(img, resize_x=outer, resize_y=outer)
                mirror = 0
            return fn.crop_mirror_normalize(img, crop=(size, size), crop_pos_x=0.5, crop_pos_y=0.5,
                                            dtype=types.FLOAT16 if half else types.FLOAT,
                                            output_layout="HWC", mean=mean, std=std, mirror=mirror)

        pipe = pipeline()
        pipe.build()
        return pipe

    # -- feeding ------------------------------------------------------------------------------
    def _read_all(self) -> list[np.ndarray | None]:
        """Every file's bytes, read and checked once here in threads: the source callback runs
        on the training thread at each batch, where it now only picks arrays from this list."""
        def read(i: int) -> np.ndarray | None:
            path = self.split.files[i]
            try:
                data = images.read_bytes(path)
                images.check_bytes(data)
                if dicom.is_dicom(data):  # DALI reads no DICOM: decoded here on the CPU, handed on as PNG
                    data = _png(images.decode(data, None))
            except images.BadImage as exc:
                self.bad.add(path, str(exc))
                self.known_bad.add(i)
                return None
            return np.frombuffer(data, np.uint8)

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(read, range(len(self.split.files))))

    def _encoded(self, i: int) -> np.ndarray | None:
        return None if i in self.known_bad else self.blobs[i]

    def _next_batch(self):
        """DALI's source callback: the next planned batch, StopIteration at the epoch's end."""
        if not self.plan:
            raise StopIteration
        step, positions = self.plan.pop(0)
        batch, failed = [], []
        for row, i in enumerate(positions):
            data = self._encoded(int(i))
            if data is None:
                failed.append(row)
                data = self.placeholder
            batch.append(data)
        self.failed_rows[step] = failed
        return batch

    def _start(self, order_np: np.ndarray, first_step: int) -> None:
        """(Re)start the pipeline at `first_step`: drain what the last epoch left queued."""
        bs = self.batch_size
        self.plan = [(s, order_np[s * bs:(s + 1) * bs]) for s in range(first_step, self.steps)]
        self.failed_rows.clear()
        if self.pipe is None:
            self.pipe = self._build()
        elif self.pipe_dirty:
            self.pipe.reset()
        self.pipe_dirty = True

    def _finish(self) -> None:
        # Whatever DALI prefetched past where the consumer stopped is run and discarded here,
        # so the next epoch starts clean. At most `prefetch` batches.
        self.plan = []
        try:
            while True:
                self.pipe.run()
        except StopIteration:
            pass
        self.pipe.reset()
        self.pipe_dirty = False

    def _culprits(self, positions: np.ndarray) -> None:
        """A batch DALI could not decode: find its bad files by a full host decode."""
        for i in positions:
            path = self.split.files[int(i)]
            try:
                images.check_bytes(images.read_bytes(path), full=True)
            except images.BadImage as exc:
                self.bad.add(path, str(exc))
                self.known_bad.add(int(i))

    def _to_torch(self, out) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        # DALI reuses its output buffers: copy into a fresh tensor (on the device, stream-ordered).
        tensor = out.as_tensor()
        half = self.spec.out_dtype in (torch.float16, torch.bfloat16)
        nhwc = torch.empty(tensor.shape(), dtype=torch.float16 if half else torch.float32, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(tensor, nhwc, cuda_stream=stream)
        nchw = nhwc.permute(0, 3, 1, 2)  # NHWC storage viewed as NCHW = channels_last
        return nchw if nchw.dtype == self.spec.out_dtype else nchw.to(self.spec.out_dtype)

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self):
        order, real = self.epoch_order()
        order_np = host_indices(order)
        bs = self.batch_size
        self._start(order_np, self.start_step)
        step = self.start_step
        try:
            while step < self.steps:
                try:
                    (out,) = self.pipe.run()
                except StopIteration:
                    break
                except RuntimeError as exc:
                    log.warning("DALI failed on step %d (%s); checking its files on the host",
                                step, str(exc).splitlines()[0])
                    known = len(self.known_bad)
                    self._culprits(order_np[step * bs:(step + 1) * bs])
                    if len(self.known_bad) == known:  # no bad file explains it: a real error
                        raise
                    self.pipe = None  # a failed DALI pipeline cannot be reused
                    self.pipe_dirty = False
                    self._start(order_np, step)
                    continue
                labels = self.batch_labels(order, real, step, self.failed_rows.pop(step, []))
                yield self._to_torch(out), labels
                step += 1
        finally:
            self._finish()
            self.start_step = 0
