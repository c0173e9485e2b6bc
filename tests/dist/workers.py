"""What each of two gloo processes does in the distributed tests (and the one-process twin).

Kept out of the test modules so `torch.multiprocessing` children import only this file.
Every worker writes its findings with `torch.save` for the parent test to compare.
"""
from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from engine.run import distributed
from engine.options.config import parse_args
from engine.run.loop import Trainer
from engine.score.metrics import summarize
from loaders import base
from loaders.datasets import Dataset, Split
from engine.options.resolve import loader_spec, sampler_spec
from models.registry import build_model

GLOBAL_BATCH = 8
IMAGE = 16
CLASSES = [f"c{i}" for i in range(4)]


def in_memory_dataset(n_train: int = 53, n_val: int = 37, seed: int = 0) -> Dataset:
    """Class-coloured uint8 images: learnable, tiny, odd split sizes (padding and remainders)."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, len(CLASSES), n)
        images = (rng.integers(0, 60, (n, IMAGE, IMAGE, 3)) + 50 * labels[:, None, None, None]).astype(np.uint8)
        return Split(labels=labels.astype(np.int64), images=images)

    return Dataset("mem", "memory", CLASSES, split(n_train), split(n_val), split(n_val), IMAGE)


def config(*extra: str):
    return parse_args(["--device", "cpu", "--batch-size", str(GLOBAL_BATCH), "--model.dropout", "0",
                       "--train.epochs", "2", "--train.progress", "off", *extra]).config


def global_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(GLOBAL_BATCH, 3, IMAGE, IMAGE, generator=g).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, len(CLASSES), (GLOBAL_BATCH,), generator=g)
    return images, labels


def one_step(model_name: str, optim: str, rank: int, world: int, poison_rank: int = -1,
             device: str = "cpu", extra: tuple[str, ...] = ()) -> dict:
    """Parameters after one step on this rank's rows of the global batch (DDP when world > 1)."""
    device = torch.device(device)
    cfg = config("--model", model_name, "--optim.name", optim, "--device", device.type, *extra)
    torch.manual_seed(0)
    model = build_model(model_name, len(CLASSES), IMAGE, dropout=0.0).to(device)
    trainer = Trainer(model, cfg, device, len(CLASSES), steps_per_epoch=10, parallel=distributed.replicas(device))
    images, labels = global_batch()
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    images, labels = images[rows].to(device), labels[rows].to(device)
    if rank == poison_rank:
        images[0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_step(images, labels)
    stats = trainer.read_accumulators(all_ranks=True)
    after = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"before": {k: v.cpu() for k, v in before.items()}, "after": after, "stats": stats}


def evaluation(rank: int, world: int, per_process_batch: bool = True) -> dict:
    """Merged val metrics of a seeded BatchNorm CNN over the sharded split. The global eval
    batch scales with the world so every process runs batches of 3 rows: the same float32
    kernels as the one-process run, hence bitwise-equal scores."""
    cfg = config("--data.eval_batch_size", str(3 * world if per_process_batch else 6), "--model", "seedcnn")
    ds = in_memory_dataset()
    torch.manual_seed(0)
    model = build_model("seedcnn", len(CLASSES), IMAGE, dropout=0.0)
    trainer = Trainer(model, cfg, torch.device("cpu"), len(CLASSES), steps_per_epoch=1)
    loader = base.build_loader("tensor", ds, "val", loader_spec(cfg), torch.device("cpu"), train=False)
    order, real = loader.epoch_order()
    cm, probs, labels = distributed.merge_eval(*trainer.evaluate(loader))
    metrics = summarize(cm, probs, labels, CLASSES)
    return {"metrics": metrics, "probs": probs, "labels": labels, "real_rows": order[:real].clone()}


def sampling(rank: int, world: int) -> dict:
    ds = in_memory_dataset()
    out = {}
    for kind in ("uniform", "balanced"):
        cfg = config("--sampler", kind)
        sampler = base.make_sampler(ds, sampler_spec(cfg), torch.device("cpu"), rank, world)
        loader = base.build_loader("tensor", ds, "train", loader_spec(cfg), torch.device("cpu"), train=True, sampler=sampler)
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            order, _ = loader.epoch_order()
            batches = [labels for _, labels in loader]
            out[(kind, epoch)] = {"order": order.clone(), "steps": loader.steps, "batch": loader.batch_size,
                                  "labels": torch.cat(batches)}
    return out


def run_all(rank: int, world: int, out_dir: str) -> None:
    """One spawn does every check: process start-up is the slow part on a 2-core machine."""
    results = {
        "sampling": sampling(rank, world),
        "evaluation": evaluation(rank, world),
        "evaluation_global_batch": evaluation(rank, world, per_process_batch=False),
        "step_mlp_sgd": one_step("mlp", "sgd", rank, world),
        "step_mlp_adamw": one_step("mlp", "adamw", rank, world),
        "step_seedcnn_adamw": one_step("seedcnn", "adamw", rank, world),
        "step_poisoned": one_step("mlp", "sgd", rank, world, poison_rank=1),
    }
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def run_cuda(rank: int, world: int, out_dir: str) -> None:
    """The CUDA path (channels_last, bf16 autocast, fused optimizers) through DDP on one GPU."""
    amp = ("--amp", "--train.amp_dtype", "bf16")
    results = {"fp32": one_step("mlp", "sgd", rank, world, device="cuda"),
               "bf16": one_step("seedcnn", "adamw", rank, world, device="cuda", extra=amp)}
    torch.save(results, os.path.join(out_dir, f"cuda_rank{rank}.pt"))


def spawned(rank: int, world: int, out_dir: str, job=run_all) -> None:
    """torch.multiprocessing entry: a gloo group through a shared file, then the job."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        job(rank, world, out_dir)
    finally:
        dist.destroy_process_group()
