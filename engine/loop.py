"""The training step and evaluation: everything stays on the device between log intervals.

Hot-loop rules (DESIGN.md): no `.item()`/`.cpu()`/printing inside a step; the learning rate
comes from a device table indexed by a device step counter; loss, correct count and the
non-finite flag accumulate in device tensors read by the caller at the log interval. A
non-finite loss skips its update on the device (fused optimizers take a `found_inf` tensor).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import Config
from engine.schedules import Plateau, lr_multipliers
from kernels.confusion import confusion_matrix

PAD_LABEL = -1


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    if not cfg.train.amp:
        return None
    if cfg.train.amp_dtype == "fp16":
        return torch.float16
    return torch.bfloat16


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on norms and biases
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Tensor lr on the device: the step writes it from the schedule table without a sync.
    lr = torch.tensor(cfg.optim.lr, device=device)
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, nesterov=True, fused=True)
    return torch.optim.AdamW(groups, lr=lr, fused=True)


class Trainer:
    def __init__(self, model: nn.Module, cfg: Config, device: torch.device, num_classes: int, steps_per_epoch: int):
        self.model, self.cfg, self.device, self.num_classes = model, cfg, device, num_classes
        self.forward = torch.compile(model, dynamic=False) if cfg.train.compile else model
        self.optimizer = make_optimizer(model, cfg, device)
        self.amp_dtype = autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.base_lr = cfg.optim.lr
        self.lr_table = (lr_multipliers(cfg.schedule, steps_per_epoch, cfg.train.epochs) * self.base_lr).to(device)
        self.lr_scale = torch.ones((), device=device)
        self.plateau = Plateau(cfg.schedule, self.lr_scale) if cfg.schedule.name == "plateau" else None
        self.step_counter = torch.zeros((), dtype=torch.int64, device=device)
        self.ema = [p.detach().clone() for p in model.state_dict().values()] if cfg.train.ema > 0 else None
        self.reset_accumulators()
        self.nonfinite_streak = torch.zeros((), dtype=torch.int64, device=device)

    # -- accumulators ---------------------------------------------------------------------------
    def reset_accumulators(self) -> None:
        z = lambda dtype: torch.zeros((), dtype=dtype, device=self.device)
        self.acc = {"loss_sum": z(torch.float64), "correct": z(torch.int64), "seen": z(torch.int64),
                    "nonfinite": z(torch.int64)}

    def read_accumulators(self) -> dict:
        # Sync point: called at the log interval and at epoch end only.
        values = {k: v.item() for k, v in self.acc.items()}
        seen = max(values["seen"], 1)
        return {"loss": values["loss_sum"] / seen, "accuracy": values["correct"] / seen,
                "seen": values["seen"], "nonfinite": values["nonfinite"],
                "nonfinite_streak": int(self.nonfinite_streak.item())}

    # -- step -----------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.train()
        lr = self.lr_table[self.step_counter.clamp(max=len(self.lr_table) - 1)] * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"].copy_(lr)
        with self._autocast():
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=PAD_LABEL,
                               label_smoothing=self.cfg.optim.label_smoothing)
        found_inf = (~torch.isfinite(loss)).to(torch.float32)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.cfg.optim.clip_grad > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_grad, foreach=True)
            found_inf = torch.maximum(found_inf, (~torch.isfinite(norm)).to(torch.float32))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.found_inf = found_inf  # fused optimizers skip the update on the device
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self._update_ema(found_inf)
        self.step_counter += 1
        valid = labels != PAD_LABEL
        ok = 1 - found_inf
        self.acc["loss_sum"] += torch.nan_to_num(loss.detach().double() * valid.sum() * ok)
        self.acc["correct"] += ((logits.detach().argmax(1) == labels) & valid).sum()
        self.acc["seen"] += valid.sum()
        self.acc["nonfinite"] += found_inf.long()
        self.nonfinite_streak.mul_(found_inf.long()).add_(found_inf.long())

    def _update_ema(self, found_inf: torch.Tensor) -> None:
        step = self.step_counter.to(torch.float32)
        decay = torch.minimum(torch.tensor(self.cfg.train.ema, device=self.device), (1 + step) / (10 + step))
        weight = (1 - decay) * (1 - found_inf)
        current = list(self.model.state_dict().values())
        floats = [(e, c) for e, c in zip(self.ema, current) if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], weight)
        for e, c in zip(self.ema, current):
            if not e.is_floating_point():
                e.copy_(c)

    def ema_state_dict(self) -> dict | None:
        if self.ema is None:
            return None
        return {k: v.clone() for k, v in zip(self.model.state_dict().keys(), self.ema)}

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(confusion matrix, probabilities of real rows, labels of real rows), on the device."""
        forward = self.forward if model is None else model
        (model or self.model).eval()
        total = loader.steps * loader.batch_size
        probs = torch.empty(total, self.num_classes, device=self.device)
        labels_all = torch.empty(total, dtype=torch.int64, device=self.device)
        cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self.device)
        offset = 0
        for images, labels in loader:
            with self._autocast():
                logits = forward(images)
            p = logits.float().softmax(1)
            n = len(labels)
            probs[offset:offset + n] = p
            labels_all[offset:offset + n] = labels
            confusion_matrix(labels, p.argmax(1), self.num_classes, out=cm)
            offset += n
        keep = labels_all[:offset] != PAD_LABEL  # data-dependent shape: after the loop, once
        return cm, probs[:offset][keep], labels_all[:offset][keep]

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "ema": self.ema_state_dict(), "step_counter": self.step_counter.clone(),
                "lr_scale": self.lr_scale.clone(), "plateau": self.plateau.state_dict() if self.plateau else None,
                "acc": {k: v.clone() for k, v in self.acc.items()}, "nonfinite_streak": self.nonfinite_streak.clone()}

    def load_state_dict(self, state: dict) -> None:
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
            self.acc[k].copy_(v)
        self.nonfinite_streak.copy_(state["nonfinite_streak"])
