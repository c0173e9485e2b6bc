"""nvJPEG decode stays correct while the training stream is far behind (needs CUDA).

The defect this guards: torchvision allocates decoded images on the caller's stream while
nvJPEG writes them on its own, so with training kernels queued, a later decode overwrote
buffers whose copies had not run yet and batches held pixels of other images (pytorch/vision
PR 9606). Here the default stream is kept busy with large matmuls between batches while the
loader's thread decodes ahead; every image of every batch is compared, after the queue
drains, with torchvision's CPU decode of the same file.
"""
from __future__ import annotations

import pytest
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from tests.helpers import write_jpegs
from engine.options.config import parse_args
from engine.options.resolve import loader_spec, sampler_spec
from loaders import base
from loaders.datasets import load_dataset

pytestmark = pytest.mark.gpu
# nvJPEG (hardware or CUDA) and libjpeg-turbo round the IDCT and chroma upsampling differently;
# an image from another file differs by tens of levels on average.
MEAN_LEVELS, MAX_LEVELS = 2.0, 40


def _busy(device, work: torch.Tensor) -> None:
    for _ in range(6):  # ~tens of ms each on an H100: the stream stays well behind the host
        work = work @ work
        work.div_(work.norm())


def test_nvjpeg_batches_equal_cpu_decode_while_the_training_stream_is_busy(tmp_path):
    root = write_jpegs(tmp_path / "many", n=600, size=96)
    cfg = parse_args(["--data", str(root), "--batch-size", "32", "--device", "cuda"]).config
    ds = load_dataset(cfg.data)
    device = torch.device("cuda")
    loader = base.build_loader("nvjpeg", ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    work = torch.randn(4096, 4096, device=device)
    kept = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        order, _ = loader.epoch_order()
        order = order.cpu()
        for step, batch, _labels in loader.decoded_batches():
            _busy(device, work)
            kept.append((order[step * loader.batch_size:(step + 1) * loader.batch_size], batch))
    torch.cuda.synchronize()
    assert len(kept) >= 30
    for positions, batch in kept:
        cpu = torch.stack([decode_jpeg(loader._view(int(i)), mode=ImageReadMode.RGB) for i in positions])
        diff = (batch.cpu().float() - cpu.float()).abs()
        per_image = diff.flatten(1).mean(1)
        assert float(per_image.max()) <= MEAN_LEVELS and float(diff.max()) <= MAX_LEVELS, \
            (float(per_image.max()), float(diff.max()))


def test_nvjpeg_png_only_batches_on_cuda(tmp_path):
    from tests.loaders.test_nvjpeg_png import write_png_tree
    root = write_png_tree(tmp_path / "xray")
    cfg = parse_args(["--data", str(root), "--batch-size", "8", "--device", "cuda"]).config
    ds = load_dataset(cfg.data)
    got = torch.cat([x for x, _ in base.build_loader("nvjpeg", ds, "val", loader_spec(cfg), torch.device("cuda"), train=False)])
    ref = torch.cat([x for x, _ in base.build_loader("plain", ds, "val", loader_spec(cfg), torch.device("cuda"), train=False)])
    assert torch.equal(got[:len(ds.val)], ref[:len(ds.val)])
