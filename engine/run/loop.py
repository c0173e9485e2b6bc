"""The training step and evaluation: everything stays on the device between log intervals.

Hot-loop rules (docs/design.md): no `.item()`/`.cpu()`/printing inside a step; the learning rate
and EMA decay come from device tables indexed by a device step counter; loss, correct count
and the non-finite flag accumulate in device tensors read by the caller at the log interval.
A non-finite loss skips its update on the device: fused optimizers take a `found_inf` tensor
and then leave weights, moments and their step count untouched. Every tensor the step writes
is updated in place, so the same step can be captured once as a CUDA graph (engine/run/graphs.py)
and replayed.
"""
from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn

from common.constants import PAD_LABEL
from engine.options.config import Config
from engine.run.multilabel import finding_counts, finding_loss
from engine.run.precision import autocast, autocast_dtype, fast_bf16  # noqa: F401  (the one autocast rule)
from engine.run.schedules import Plateau, ema_decays, lr_multipliers
from engine.score.scoring import score
from engine.score.tta import TTA

# Tests swap in a counting backend; users keep inductor.
COMPILE_BACKEND = os.environ.get("MEDTRAIN_COMPILE_BACKEND", "inductor")


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on norms and biases
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Tensor lr on the device: the step writes it from the schedule table without a sync.
    lr = torch.tensor(cfg.optim.lr, device=device)
    if cfg.optim.name == "sgd":  # SGD keeps no step count: capture needs no flag; Nesterov needs momentum
        sgd = torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.momentum > 0, fused=True)
        return zero_momentum(sgd)
    # capturable: the step count lives on the device, which CUDA-graph capture requires.
    return torch.optim.AdamW(groups, lr=lr, fused=True, capturable=cfg.train.cuda_graph)


def zero_momentum(sgd: torch.optim.SGD) -> torch.optim.SGD:
    """Momentum buffers made up front, as zeros. Fused SGD otherwise makes them on its first step
    with `empty_like` and then returns early when `found_inf` is set (the skip a non-finite first
    step relies on), so step 2 would read uninitialised memory. With dampening 0, a zero buffer's
    first update (momentum * 0 + grad) equals the fused kernel's first-step copy of the gradient."""
    for group in sgd.param_groups:
        if group["momentum"] > 0:
            for p in group["params"]:
                sgd.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return sgd


# ----------------------------------------------------------------------------- mixing

class Mixer:
    """Mixup / cutmix on the device: each sample is mixed with its mirror in the batch
    (`flip(0)`, as timm does: no permutation to draw) by a weight lam ~ Beta(a, a) drawn from
    the default generator, so it is saved with the RNG state and replayed by CUDA graphs.
    With both on, each batch picks one of the two by a device coin flip."""

    def __init__(self, mixup: float, cutmix: float, device: torch.device):
        self.mixup, self.cutmix = mixup, cutmix
        self.enabled = mixup > 0 or cutmix > 0
        self.alphas = torch.tensor([mixup or 1.0] * 2 + [cutmix or 1.0] * 2, device=device)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        """-> (mixed images, partner labels, lam): loss = lam * CE(y) + (1 - lam) * CE(partner)."""
        gam = torch._standard_gamma(self.alphas)
        lam_mix = gam[0] / (gam[0] + gam[1])
        lam_cut = gam[2] / (gam[2] + gam[3])
        if self.mixup > 0 and self.cutmix > 0:
            use_cut = torch.rand((), device=images.device) < 0.5
        else:
            use_cut = torch.full((), self.cutmix > 0, device=images.device)
        h, w = images.shape[-2:]
        centre = torch.rand(2, device=images.device)
        half = torch.sqrt(1 - lam_cut) / 2  # box side as a fraction of the image side
        ys = (torch.arange(h, device=images.device) + 0.5) / h
        xs = (torch.arange(w, device=images.device) + 0.5) / w
        box = ((ys - centre[0]).abs() <= half).view(h, 1) & ((xs - centre[1]).abs() <= half).view(1, w)
        box = box & use_cut
        partner = images.flip(0)
        blend = torch.where(use_cut, torch.ones_like(lam_mix), lam_mix).to(images.dtype)
        mixed = torch.where(box, partner, images * blend + partner * (1 - blend))
        lam = torch.where(use_cut, 1 - box.float().mean(), lam_mix)  # the area actually kept
        return mixed.contiguous(memory_format=torch.channels_last), labels.flip(0), lam


# ----------------------------------------------------------------------------- trainer

class Trainer:
    def __init__(self, model: nn.Module, cfg: Config, device: torch.device, num_classes: int, steps_per_epoch: int,
                 parallel=None, logit_offset: torch.Tensor | None = None, pos_weight: torch.Tensor | None = None,
                 multilabel: bool = False):
        """`parallel`: a `distributed.Replicas` under torchrun (DDP forward, unanimous skips,
        accumulators summed over ranks), None in a single process. `logit_offset`: tau * log prior
        of the logit-adjusted loss (engine/score/decisions.py), a device tensor made before any capture.
        `multilabel`: labels are N x K 0/1 findings, the loss a per-finding sigmoid BCE weighted by
        `pos_weight` (engine/run/multilabel.py)."""
        self.model, self.cfg, self.device, self.num_classes = model, cfg, device, num_classes
        self.parallel = parallel
        if parallel is not None:
            self.forward = parallel.wrap(model, cfg.train.compile)
        else:
            self.forward = torch.compile(model, dynamic=False, backend=COMPILE_BACKEND) if cfg.train.compile else model
        self._eval_twin = self._eval_compiled = None  # built at the first evaluation (see _eval_forward)
        self.optimizer = make_optimizer(model, cfg, device)
        if parallel is not None:
            parallel.prepare(self.optimizer)
        self.amp_dtype = autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.base_lr = cfg.optim.lr
        total = steps_per_epoch * cfg.train.epochs
        self.lr_table = (lr_multipliers(cfg.schedule, steps_per_epoch, cfg.train.epochs) * self.base_lr).to(device)
        self.lr_scale = torch.ones((), device=device)
        self.plateau = Plateau(cfg.schedule, self.lr_scale) if cfg.schedule.name == "plateau" else None
        self.step_counter = torch.zeros((), dtype=torch.int64, device=device)
        self.mixer = Mixer(cfg.train.mixup, cfg.train.cutmix, device)
        # A non-finite batch also poisons BatchNorm running stats in the forward pass: they are
        # copied aside before it and put back when the step is skipped.
        self.buffers = list(model.buffers())
        self.buffer_backup = [b.detach().clone() for b in self.buffers]
        self.ema = None
        if cfg.train.ema > 0:
            self.ema_table = ema_decays(cfg.train.ema, total).to(device)
            live = list(model.state_dict().values())
            self.ema = [t.detach().clone() for t in live]
            self._ema_float = ([e for e in self.ema if e.is_floating_point()], [t for t in live if t.is_floating_point()])
            self._ema_other = [(e, t) for e, t in zip(self.ema, live) if not e.is_floating_point()]
            self._ema_scratch = [torch.empty_like(t) for t in self._ema_float[1]]
        z = lambda dtype: torch.zeros((), dtype=dtype, device=device)
        self.class_ids = torch.arange(num_classes, device=device)
        self.multilabel, self.pos_weight = multilabel, pos_weight
        # loss_rows: rows of finite-loss steps, the loss mean's denominator (skipped steps add no loss)
        # class_seen/class_correct: per-class counts; their sums are the rows seen and correct.
        # Multi-label: per finding, positives then negatives (2K): correct ones are sensitivity
        # and specificity counts, so the same reading gives per-finding balanced accuracy.
        counters = 2 * num_classes if multilabel else num_classes
        self.acc = {"loss_sum": z(torch.float64), "loss_rows": z(torch.int64), "nonfinite": z(torch.int64),
                    "class_seen": torch.zeros(counters, dtype=torch.int64, device=device),
                    "class_correct": torch.zeros(counters, dtype=torch.int64, device=device)}
        self.nonfinite_streak = z(torch.int64)
        self.logit_offset = logit_offset  # replays of a captured step read it in place
        self.graph = None
        if cfg.train.cuda_graph:
            from engine.run.graphs import CudaGraphStep
            self.graph = CudaGraphStep(self._step)

    # -- accumulators ---------------------------------------------------------------------------
    def reset_accumulators(self) -> None:
        for value in self.acc.values():  # in place: a captured graph holds these very tensors
            value.zero_()

    def read_accumulators(self, all_ranks: bool = False) -> dict:
        """This rank's counts; with `all_ranks` (epoch end) summed over the DDP ranks first."""
        acc, streak = self.acc, self.nonfinite_streak
        if all_ranks and self.parallel is not None:
            acc, streak = self.parallel.sum(acc), self.parallel.max(streak)
        # Sync point: called at the log interval and at epoch end only; one transfer for all of it
        # (float64 holds the int64 counts exactly up to 2^53).
        tensors = list(acc.values()) + [streak]
        flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]).tolist()
        values, start = {}, 0
        for key, t in zip(list(acc) + ["nonfinite_streak"], tensors):
            part, start = flat[start:start + t.numel()], start + t.numel()
            part = part if t.is_floating_point() else [int(x) for x in part]
            values[key] = part[0] if t.ndim == 0 else part
        seen, correct = sum(values["class_seen"]), sum(values["class_correct"])
        rows = seen // self.num_classes if self.multilabel else seen  # multi-label: each row counts once per finding
        recalls = [c / n for c, n in zip(values["class_correct"], values["class_seen"]) if n]
        return {"loss": values["loss_sum"] / max(values["loss_rows"], 1), "accuracy": correct / max(seen, 1),
                "balanced_accuracy": sum(recalls) / max(len(recalls), 1),  # over the classes seen
                "seen": rows, "nonfinite": values["nonfinite"],
                "nonfinite_streak": values["nonfinite_streak"]}

    # -- step -----------------------------------------------------------------------------------
    def _autocast(self):
        # No cast cache under CUDA graphs (as the CUDA-graph docs ask): cached casts are
        # tensors created outside the step that a replay would not refresh.
        return autocast(self.device, self.amp_dtype, cache=not self.cfg.train.cuda_graph)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, meta: torch.Tensor | None = None) -> None:
        self.model.train()
        if self.graph is not None:  # the runner refuses --cuda-graph with metadata
            self.graph(images, labels)
        else:
            self._step(images, labels, meta)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, partner, lam) -> torch.Tensor:
        if self.multilabel:
            bce = lambda target: finding_loss(logits, target, self.pos_weight, self.cfg.optim.label_smoothing)
            return bce(labels) if partner is None else lam * bce(labels) + (1 - lam) * bce(partner)
        if self.logit_offset is not None:  # a device tensor made before capture: replays read it in place
            logits = logits.float() + self.logit_offset
        ce = lambda target: F.cross_entropy(logits.float(), target, ignore_index=PAD_LABEL,
                                            label_smoothing=self.cfg.optim.label_smoothing)
        if partner is None:
            return ce(labels)
        return lam * ce(labels) + (1 - lam) * ce(partner)

    def _step(self, images: torch.Tensor, labels: torch.Tensor, meta: torch.Tensor | None = None) -> None:
        """One update. Every write is in place and no value goes to the host: graph-capturable."""
        # take(), not table[index]: indexing with a 0-d tensor may read it on the host (a sync).
        index = self.step_counter.clamp(max=len(self.lr_table) - 1)
        lr = self.lr_table.take(index) * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"].copy_(lr)
        partner = lam = None
        if self.mixer.enabled:
            images, partner, lam = self.mixer(images, labels)
        if self.buffers:
            torch._foreach_copy_(self.buffer_backup, self.buffers)
        with self._autocast():  # meta: tabular features for a fused model (loaders/tabular.py)
            logits = self.forward(images) if meta is None else self.forward(images, meta)
        loss = self._loss(logits, labels, partner, lam)
        # The scaler skips fp16 gradient overflow on its own; only a non-finite loss counts here.
        found_inf = (~torch.isfinite(loss)).to(torch.float32)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.cfg.optim.clip_grad > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_grad, foreach=True)
            if self.scaler is None:
                found_inf = torch.maximum(found_inf, (~torch.isfinite(norm)).to(torch.float32))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.found_inf = found_inf  # fused optimizers skip the update on the device
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        skipped = found_inf.bool()
        for buffer, backup in zip(self.buffers, self.buffer_backup):
            # One launch per buffer, in place (out= the buffer itself): a NaN-poisoned running
            # stat needs a select, which no foreach op offers (a blend would keep NaN * 0).
            torch.where(skipped, backup, buffer, out=buffer)
        if self.ema is not None:
            self._update_ema(index, found_inf)
        self.step_counter.add_(1)
        self._count(logits, labels, loss, found_inf)

    def _count(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor, found_inf: torch.Tensor) -> None:
        """The step's loss and per-class (per-finding) counts, added on the device."""
        valid = labels != PAD_LABEL if not self.multilabel else labels[:, 0] != PAD_LABEL
        ok = 1 - found_inf
        count = valid.sum()
        self.acc["loss_sum"].add_(torch.nan_to_num(loss.detach().double() * count * ok))
        self.acc["loss_rows"].add_(count * ok.long())
        if self.multilabel:
            seen, correct = finding_counts(logits.detach(), labels, valid)
            self.acc["class_seen"].add_(seen)
            self.acc["class_correct"].add_(correct)
        else:
            self._count_classes(logits, labels, valid)
        bad = found_inf.long()
        self.acc["nonfinite"].add_(bad)
        self.nonfinite_streak.mul_(bad).add_(bad)

    def _count_classes(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
        hit = (logits.detach().argmax(1) == labels) & valid
        # Per-class counts by comparison with the class ids and a column sum: integer, exact and
        # free of index_add_, which --train.deterministic turns into index_put_(accumulate=True),
        # whose bounds check reads to the host (a sync per call; CUDA-graph capture refuses it).
        # A padded row (-1) matches no class.
        one_hot = (labels.unsqueeze(1) == self.class_ids).long()
        self.acc["class_seen"].add_(one_hot.sum(0))
        self.acc["class_correct"].add_((one_hot * hit.long().unsqueeze(1)).sum(0))

    def _update_ema(self, index: torch.Tensor, found_inf: torch.Tensor) -> None:
        weight = (1 - self.ema_table.take(index)) * (1 - found_inf)  # a skipped step leaves the EMA too
        # ema = ema * (1 - w) + live * w with w a device tensor: the Tensor overloads of _foreach_mul_
        # (torch 2.11's _foreach_lerp_ has none; it would read w on the host, a sync capture refuses),
        # through a scratch list allocated once, so the step allocates no copy of the parameters.
        ema, live = self._ema_float
        torch._foreach_copy_(self._ema_scratch, live)
        torch._foreach_mul_(self._ema_scratch, weight)
        torch._foreach_mul_(ema, 1 - weight)
        torch._foreach_add_(ema, self._ema_scratch)
        for e, t in self._ema_other:
            e.copy_(t)

    def ema_state_dict(self) -> dict | None:
        if self.ema is None:
            return None
        return {k: v.clone() for k, v in zip(self.model.state_dict().keys(), self.ema)}

    # -- evaluation -----------------------------------------------------------------------------
    def _eval_forward(self, model: nn.Module | None):
        """Eager: the given model (live, EMA or selected weights). Compiled: one eval twin,
        compiled once, into which those weights are copied, so every evaluation of the run
        reuses a single compiled graph instead of running eagerly or compiling per model."""
        source = model or self.model
        if not self.cfg.train.compile:
            source.eval()
            return source
        # A wrapper (TTA) keeps its views eager and runs the compiled twin on each of them:
        # its state dict is the inner model's under `model.`, which the twin would refuse.
        wrapper, inner = (source, source.model) if isinstance(source, TTA) else (None, source)
        if self._eval_twin is None:
            self._eval_twin = copy.deepcopy(self.model).eval()
            self._eval_compiled = torch.compile(self._eval_twin, dynamic=False, backend=COMPILE_BACKEND)
        self._eval_twin.load_state_dict(inner.state_dict())
        self._eval_twin.eval()
        return TTA(self._eval_compiled, wrapper.multilabel).eval() if wrapper is not None else self._eval_compiled

    @torch.no_grad()
    def evaluate(self, loader, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(confusion matrix, probabilities of real rows, labels of real rows), on the device."""
        return score(self._eval_forward(model), loader, self.num_classes, self._autocast, self.multilabel)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "ema": self.ema_state_dict(), "step_counter": self.step_counter.clone(),
                "lr_scale": self.lr_scale.clone(), "plateau": self.plateau.state_dict() if self.plateau else None,
                "acc": {k: v.clone() for k, v in self.acc.items()}, "nonfinite_streak": self.nonfinite_streak.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Everything is copied into the existing tensors, so nothing a captured graph holds moves.
        Call before the first step (the optimizer state is created anew by its loader)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # keep lr a device tensor after loading
            group["lr"] = torch.as_tensor(group["lr"], device=self.device).clone()
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"]:
            for e, v in zip(self.ema, state["ema"].values()):
                e.copy_(v)
        self.step_counter.copy_(state["step_counter"])
        self.lr_scale.copy_(state["lr_scale"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        for k, v in state["acc"].items():
            if k in self.acc:
                self.acc[k].copy_(v)
        self.nonfinite_streak.copy_(state["nonfinite_streak"])
