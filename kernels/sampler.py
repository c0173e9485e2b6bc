"""Per-epoch index order on the device, optionally weighted for class imbalance.

Class c gets weight proportional to n_c^-alpha (alpha 0 = natural frequencies, 1 = balanced)
unless per-sample weights are given. With replacement: multinomial draws. Without: exponential
keys (Efraimidis-Spirakis; equivalent to Gumbel top-k), i.e. a weighted permutation. The global
order is a pure function of (seed, epoch); each DDP rank takes a disjoint, equal-length slice.
"""
from __future__ import annotations

import torch


def class_balanced_weights(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    per_class = torch.where(counts > 0, counts.clamp(min=1) ** (-alpha), torch.zeros_like(counts))
    return per_class[labels].to(torch.float32)


class EpochSampler:
    def __init__(self, labels: torch.Tensor, num_classes: int, batch_size: int, *, kind: str = "uniform",
                 alpha: float = 1.0, replacement: bool = True, weights: torch.Tensor | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.device = labels.device
        self.labels = labels
        self.n = len(labels)
        self.kind, self.replacement, self.seed = kind, replacement, seed
        self.rank, self.world_size = rank, world_size
        if weights is not None:
            self.weights = weights.to(self.device, torch.float32)
        elif kind == "balanced":
            self.weights = class_balanced_weights(labels, num_classes, alpha)
        else:
            self.weights = None
        # Fixed shape: whole global batches only (drop the remainder), at least one step.
        self.steps = max(1, self.n // (batch_size * world_size))
        self.per_rank = self.steps * batch_size
        self.global_length = self.per_rank * world_size
        self.generator = torch.Generator(device=self.device)

    def global_order(self, epoch: int) -> torch.Tensor:
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 7919 + 17)
        g, L = self.generator, self.global_length
        if self.weights is None:
            reps = -(-L // self.n)
            perms = [torch.randperm(self.n, generator=g, device=self.device) for _ in range(reps)]
            return torch.cat(perms)[:L]
        if self.replacement:
            return torch.multinomial(self.weights, L, replacement=True, generator=g)
        reps = -(-L // self.n)
        orders = []
        for _ in range(reps):
            u = torch.rand(self.n, generator=g, device=self.device).clamp_(min=1e-12)
            keys = -torch.log(u) / self.weights.clamp(min=1e-30)
            orders.append(torch.argsort(keys))
        return torch.cat(orders)[:L]

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        order = self.global_order(epoch)
        return order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
