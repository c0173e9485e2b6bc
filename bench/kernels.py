"""`python -m bench.kernels`: each kernel's time against its reference, one JSON line per kernel.

Every kernel and its reference are timed in alternating rounds inside this one process and
reported as medians and a ratio (`speedup_*` = reference time / kernel time), because
absolute times on a shared machine drift between runs while ratios from one run do not.
Augmentation is also timed against torchvision.transforms.v2 on the same uint8 batch on the
same device: per sample (what a Dataset's transform does, with each image's own random
parameters, like ours) and batched (one set of parameters for the whole batch: a lower bound
on v2's cost, not the same work). Without a GPU the fused Triton kernel cannot run (only
interpreted, which times nothing useful), so on the CPU the augmentation line reports the
pure-torch path `DeviceAugment` uses there.

Options: --device auto|cpu|cuda, --batch N, --size N, --samples N, --rounds N, --out FILE
(also writes the lines, device and versions as one JSON document, e.g. under bench/results/).
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import json
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.record import print_line
from common.cli import run_main, suggest
from common.options import like, opt, parse, usage
from common.device import sync  # noqa: F401  (the bench CLIs import it from here)
from engine.options.config import TrainConfig
from engine.run.env import versions
from kernels.augment import AugmentSpec, augment_reference, draw_params, pick_impl, triton_available
from kernels.clahe import clahe
from kernels.confusion import confusion_matrix, confusion_reference
from kernels.sampler import EpochSampler

HAM_CLASS_SHARES = (0.67, 0.11, 0.11, 0.05, 0.03, 0.015, 0.015)  # HAM10000-like imbalance




def time_interleaved(variants: dict, rounds: int, device: torch.device, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per call of each variant, alternating their order every round."""
    for fn in variants.values():
        for _ in range(warmup):  # compile / autotune / allocate outside the timing
            fn()
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t0 = time.perf_counter()
            variants[name]()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def ratio(reference_ms: float, kernel_ms: float) -> float:
    return round(reference_ms / max(kernel_ms, 1e-9), 3)


# ----------------------------------------------------------------------------- augmentation

def torchvision_pipeline(spec: AugmentSpec):
    from torchvision.transforms import v2

    rotations = [v2.Lambda(partial(torch.rot90, k=k, dims=(-2, -1))) for k in range(4)]
    return v2.Compose([
        v2.RandomResizedCrop(spec.out_size, scale=(spec.scale_min, 1.0), ratio=spec.ratio, antialias=False),
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomChoice(rotations),
        v2.ColorJitter(brightness=spec.jitter, contrast=spec.jitter, saturation=spec.jitter),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std)),
    ])


def bench_augment(device, batch, size, rounds) -> dict:
    spec = AugmentSpec(out_size=size, jitter=0.2, out_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device,
                           generator=g).permute(0, 3, 1, 2)  # channels_last uint8, as loaders hand it over
    fused = pick_impl("triton", device) if triton_available(device) and device.type == "cuda" else None
    tv = torchvision_pipeline(spec)

    def params():
        return draw_params(spec, batch, g, device)

    def per_sample():
        out = torch.stack([tv(img) for img in images.unbind(0)])
        return out.to(spec.out_dtype).contiguous(memory_format=torch.channels_last)

    def batched():
        return tv(images).to(spec.out_dtype).contiguous(memory_format=torch.channels_last)

    variants = {"reference": lambda: augment_reference(images, params(), spec),
                "torchvision_v2_per_sample": per_sample, "torchvision_v2_batched": batched}
    if fused is not None:
        variants["kernel"] = lambda: fused(images, params(), spec)
    ms = time_interleaved(variants, rounds, device)
    kernel_ms = ms.get("kernel", ms["reference"])
    return {"kernel": "augment", "impl": "triton" if fused else "reference (no CUDA: the fused kernel needs a GPU)",
            "shape": [batch, 3, size, size], "out_dtype": str(spec.out_dtype).replace("torch.", ""),
            "ms": round(kernel_ms, 3), "reference_ms": round(ms["reference"], 3),
            "torchvision_v2_per_sample_ms": round(ms["torchvision_v2_per_sample"], 3),
            "torchvision_v2_batched_ms": round(ms["torchvision_v2_batched"], 3),
            "speedup_vs_reference": ratio(ms["reference"], kernel_ms),
            "speedup_vs_torchvision_v2_per_sample": ratio(ms["torchvision_v2_per_sample"], kernel_ms),
            "speedup_vs_torchvision_v2_batched": ratio(ms["torchvision_v2_batched"], kernel_ms),
            "images_per_second": round(batch / kernel_ms * 1e3, 1)}


# ----------------------------------------------------------------------------- sampler

def imbalanced_labels(n: int, device) -> torch.Tensor:
    counts = (np.array(HAM_CLASS_SHARES) * n).astype(int)
    counts[0] += n - counts.sum()
    return torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts)).to(device)


def bench_sampler(device, samples, rounds) -> list[dict]:
    labels = imbalanced_labels(samples, device)
    lines = []
    for replacement in (True, False):
        s = EpochSampler(labels, len(HAM_CLASS_SHARES), 1, kind="balanced", replacement=replacement, seed=0)
        weights = s.p.float()
        g = torch.Generator(device=device).manual_seed(0)
        reference = (lambda: torch.multinomial(weights, samples, replacement=True, generator=g)) if replacement else \
            (lambda: torch.multinomial(weights, samples, replacement=False, generator=g))
        epoch = iter(range(10**9))
        ms = time_interleaved({"kernel": lambda: s.global_order(next(epoch)), "reference": reference}, rounds, device)
        lines.append({"kernel": "sampler", "impl": "inverse-CDF" if replacement else "systematic-PPS",
                      "replacement": replacement, "samples": samples, "ms": round(ms["kernel"], 3),
                      "reference": f"torch.multinomial(replacement={replacement})",
                      "reference_ms": round(ms["reference"], 3), "speedup_vs_reference": ratio(ms["reference"], ms["kernel"])})
    return lines


# ----------------------------------------------------------------------------- fused conv block

def bench_conv_block(device, batch, size, rounds) -> dict | None:
    """One training step (forward + backward) of a seed-CNN block, 32 -> 64 channels: the fused
    CPU kernel against the same module's eager layers. None where the kernel cannot run."""
    from torch import nn

    from kernels import bn_pool_relu_cpu
    from models.fused_block import ConvBNPoolReLU

    if device.type != "cpu" or not bn_pool_relu_cpu.native_available():
        return None
    torch.manual_seed(0)
    block = ConvBNPoolReLU(32, 64).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 32, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert block._fusable(x)

    def step(forward):
        out = forward(x)
        out.backward(torch.ones_like(out))

    ms = time_interleaved({"kernel": lambda: step(block), "reference": lambda: step(partial(nn.Sequential.forward, block))},
                          rounds, device)
    return {"kernel": "conv_block", "impl": "fused C (kernels/native/bn_pool_relu.c)",
            "reference": "the same conv, BatchNorm2d, max_pool2d (lean) and relu, eager", "shape": [batch, 32, size, size],
            "ms": round(ms["kernel"], 3), "reference_ms": round(ms["reference"], 3),
            "speedup_vs_reference": ratio(ms["reference"], ms["kernel"])}


# ----------------------------------------------------------------------------- confusion, CLAHE

def bench_confusion(device, samples, rounds) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    labels = torch.randint(0, 7, (samples,), device=device, generator=g)
    preds = torch.randint(0, 7, (samples,), device=device, generator=g)
    out = torch.zeros(7, 7, dtype=torch.int64, device=device)
    ms = time_interleaved({"kernel": lambda: confusion_matrix(labels, preds, 7, out=out),
                           "reference": lambda: confusion_reference(labels, preds, 7)}, rounds, device)
    return {"kernel": "confusion", "impl": "torch scatter_add (no sync)", "samples": samples, "classes": 7,
            "ms": round(ms["kernel"], 3), "reference": "torch.bincount of the masked pairs (syncs on the mask)",
            "reference_ms": round(ms["reference"], 3), "speedup_vs_reference": ratio(ms["reference"], ms["kernel"])}


def bench_clahe(device, batch, size, rounds) -> dict | None:
    try:
        import cv2
    except ImportError:
        return None
    planes = torch.randint(40, 200, (batch, size, size), dtype=torch.uint8, device=device,
                           generator=torch.Generator(device=device).manual_seed(0))
    host = planes.cpu().numpy()
    op = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    ms = time_interleaved({"kernel": lambda: clahe(planes, 2.0, (8, 8)),
                           "reference": lambda: [op.apply(p) for p in host]}, rounds, device)
    return {"kernel": "clahe", "impl": "torch", "shape": [batch, size, size], "ms": round(ms["kernel"], 3),
            "reference": f"OpenCV {cv2.__version__} createCLAHE on the host, one plane at a time ({cv2.getNumThreads()} threads)",
            "reference_ms": round(ms["reference"], 3), "speedup_vs_reference": ratio(ms["reference"], ms["kernel"])}


@dataclass
class Options:
    device: str = like(TrainConfig, "device", help="where the kernels run")
    batch: int = opt(0, ge=0, help="augmentation/CLAHE batch (0: 256 on GPU, 16 on CPU)")
    size: int = opt(224, ge=1, help="image side of the augmentation/CLAHE batch")
    samples: int = opt(0, ge=0, help="sampler epoch length and confusion pairs (0: 1,000,000 on GPU, 200,000 on CPU)")
    rounds: int = opt(0, ge=0, help="timed rounds per variant (0: 20 on GPU, 3 on CPU)")
    out: str = opt("", path=True, help="also write all lines with device and versions to this JSON file")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.kernels", __doc__.split("\n")[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.kernels", suggest)[0]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.kernels: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    gpu = device.type == "cuda"
    batch, rounds = args.batch or (256 if gpu else 16), args.rounds or (20 if gpu else 3)
    samples = args.samples or (1_000_000 if gpu else 200_000)
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    lines = [bench_augment(device, batch, args.size, rounds), *bench_sampler(device, samples, rounds),
             bench_confusion(device, samples, rounds), bench_clahe(device, batch, args.size, rounds),
             bench_conv_block(device, 64, 128 if args.size >= 128 else args.size, max(rounds, 5))]
    lines = [dict(line, device=name) for line in lines if line]
    for line in lines:
        print_line(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        doc = {"device": name, "versions": versions(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": "python -m bench.kernels " + " ".join(argv if argv is not None else sys.argv[1:]),
               "results": lines}
        Path(args.out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
