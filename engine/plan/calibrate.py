"""Cost of one training image on this device: short timed runs of the real step and input path.

`seconds_per_image` builds the model at a candidate size, runs one warm-up step (allocation,
cuDNN autotuning) and then as many steps as fit in about `seconds` (keeping the fastest),
forward + backward + AdamW update on random inputs, and returns wall seconds per image.
Candidates far too slow for the budget are given up after two tiny scout steps, and
candidates so fast that even an upper bound from the scout affords every epoch the plan would
run are settled by it: on a small set no amount of timing could change the plan.
`input_seconds_per_image` times the loaders' shared device-side half, the training
augmentation (crop and resize from the native size, flips, jitter, colour constancy), on
random native-size images. The plan divides its time budget by their sum; evaluation and the
loop's bookkeeping are a margin added by engine/plan/plan.py. The input path is measured, not
assumed a fixed share of the step: with fused CPU conv blocks the seed CNN's step halved
while the augmentation did not, and a fixed 1.5x margin overran a 5-minute budget by 2
minutes on HAM10000.
"""
from __future__ import annotations

import time

import torch

from engine.run.precision import amp_dtype, autocast
from kernels.augment import AugmentSpec, DeviceAugment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# A candidate whose 2-image steps already cost this many times the affordable time per image
# is given up before a full probe batch is allocated: on the CPU a 32-image ResNet-18 step at
# 224 px holds ~1.5 GB of activations, which became the whole run's peak memory. The margin
# covers a tiny step's fixed cost per image (2-core CPU, per image, 2-image steps over full
# probe batches: seed CNN 28 px 6.4x, 64 px 1.9x, 128 px 0.9x; ResNet-18 128 px 3.1x, 224 px 1.7x).
SCOUT_IMAGES, SCOUT_MARGIN = 2, 8.0
# ... and the same table bounds the full batch from above: a 2-image step never cost under 0.9x
# the full batch per image, so twice the scout's figure is an upper bound of the full step's.
SCOUT_BOUND = 2.0


def seconds_per_image(model_name: str, size: int, num_classes: int, device: torch.device, batch: int,
                      seconds: float = 1.0, give_up_after: float = 0.0, settled_below: float = 0.0) -> float:
    """Seconds per image of the fastest warm step. `give_up_after` > 0 returns an early estimate
    when the candidate is clearly slower than that (a scout step first, then the warm-up step);
    `settled_below` > 0 returns the scout's upper bound (SCOUT_BOUND x its figure) when that is at
    or below it, the cost under which the caller's decision no longer depends on the figure."""
    from engine.run.build import bare_model  # the assembly module; imported late: it loads the data layer
    model = bare_model(model_name, num_classes, size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = amp_dtype(device.type == "cuda", "auto", device)  # as the plan trains on a GPU (engine/run/precision.py)

    def timed_step(images, labels) -> float:
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)  # sync point: calibration, before training
        return (time.perf_counter() - t0) / len(labels)

    def inputs(n):
        return (torch.randn(n, 3, size, size, device=device).contiguous(memory_format=torch.channels_last),
                torch.randint(0, num_classes, (n,), device=device))

    if give_up_after or settled_below > 0:
        scout = inputs(SCOUT_IMAGES)
        estimate = min(timed_step(*scout), timed_step(*scout))  # the second step is warm
        if give_up_after and estimate > SCOUT_MARGIN * give_up_after:
            return estimate
        if SCOUT_BOUND * estimate <= settled_below:
            return SCOUT_BOUND * estimate
    images, labels = inputs(batch)
    warm = timed_step(images, labels)
    if give_up_after and warm > give_up_after:
        return warm
    # The fastest step, not the mean: on a shared machine other processes only ever add time,
    # and the plan should size the run for the device, not for a moment's contention.
    best, start = float("inf"), time.perf_counter()
    for _ in range(200):
        best = min(best, timed_step(images, labels))
        if time.perf_counter() - start >= seconds:
            break
    return best


def input_seconds_per_image(native_size: int, spec: AugmentSpec, device: torch.device, batch: int,
                            seconds: float = 0.5, settled_below: float = 0.0) -> float:
    """Seconds per image of the training augmentation `spec` (loaders.base.augment_spec) on a
    batch of native-size uint8 images, fastest of a few warm calls. JPEG decoding (each epoch
    for the JPEG-reading loaders, once for the tensor loader) is not included. `settled_below`:
    as for `seconds_per_image`, an upper bound from SCOUT_IMAGES-image calls when it is that low."""
    augmentation = DeviceAugment(spec, seed=0, device=device)
    if settled_below > 0:
        bound = SCOUT_BOUND * _fastest_call(augmentation, native_size, device, SCOUT_IMAGES, calls=3, seconds=0.0)
        if bound <= settled_below:
            return bound
    return _fastest_call(augmentation, native_size, device, batch, calls=50, seconds=seconds)


def _fastest_call(augmentation: DeviceAugment, native_size: int, device: torch.device, batch: int, calls: int,
                  seconds: float) -> float:
    images = torch.randint(0, 256, (batch, native_size, native_size, 3), dtype=torch.uint8,
                           device=device).permute(0, 3, 1, 2)  # channels_last uint8, as loaders hold them
    best, start = float("inf"), time.perf_counter()
    for key in range(calls):
        t0 = time.perf_counter()
        augmentation(images, key)
        _sync(device)  # sync point: calibration, before training
        if key:  # the first call allocates and, on a GPU, compiles
            best = min(best, (time.perf_counter() - t0) / batch)
        if key >= 2 and time.perf_counter() - start >= seconds:
            break
    return best
