"""Several processes, one run: torchrun's environment, the process group, DDP, exact merges.

`torchrun --nproc_per_node N -m engine.train ...` sets RANK, LOCAL_RANK and WORLD_SIZE (and
MASTER_ADDR/PORT); `setup` reads them and joins the group: NCCL on CUDA (one GPU per local
rank), gloo on the CPU, with `--dist.timeout_s` as the collective timeout, so a rank that
dies or hangs makes the others fail with `PeerLost` (one line from the CLI) instead of
waiting forever. Without those variables everything here is a no-op and the run is the
single-process run.

Conventions (docs/multi-gpu.md):
- `--batch-size` is the GLOBAL batch; each rank trains on batch/world rows of a disjoint slice
  of the same global epoch order, so the steps per epoch, the lr schedule and the sample order
  do not depend on the number of processes, and a checkpoint resumes on any world size that
  divides the batch.
- Gradients are averaged by DDP: one step equals the single-process step on the global batch
  (BatchNorm statistics aside: per rank unless `--dist.sync_bn`).
- Evaluation shards the split into disjoint contiguous blocks; confusion matrices are summed
  and score rows gathered in rank order, so metrics equal those of one process exactly.
- Rank 0 alone writes files; every rank takes part in every collective.
"""
from __future__ import annotations

import datetime
import inspect
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from engine.options.config import Config, ConfigError
from engine.run.env import pick_device

log = logging.getLogger("medtrain.dist")


class PeerLost(RuntimeError):
    """A collective failed or timed out: another rank died, hung or lost the network."""

    exit_status = 3  # the CLI helper (common/cli.py) prints one line and exits with this


@dataclass
class Context:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    timeout_s: int = 0
    run_dir: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = Context()


def current() -> Context:
    return _current


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# ----------------------------------------------------------------------------- setup

def env_ranks() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables; (0, 0, 1) when they are absent."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 0, 1
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK/LOCAL_RANK/WORLD_SIZE must be integers (launch with torchrun)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return rank, local, world


def check_config(cfg: Config, world: int, device: torch.device) -> None:
    """Combinations refused up front, with the reason, before any process waits on another."""
    if cfg.data.batch_size % world:
        raise ConfigError(f"--batch-size {cfg.data.batch_size} is the global batch and must be divisible by the "
                          f"{world} processes (each trains on batch/{world} rows)")
    if cfg.train.cuda_graph:
        raise ConfigError("--cuda-graph is single-process only: capturing DDP's hook-driven all-reduce needs NCCL's "
                          "async error handling off, which would disable --dist.timeout_s; under torchrun use "
                          "--compile (and --amp) instead")
    if cfg.dist.sync_bn and device.type != "cuda":
        raise ConfigError("--dist.sync_bn needs CUDA: torch's SyncBatchNorm has no CPU implementation")


def setup(cfg: Config) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    global _current
    rank, local, world = env_ranks()
    device = pick_device(cfg)
    if world == 1:
        _current = Context(device=device)
        return _current, device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible: "
                              f"use --nproc_per_node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    check_config(cfg, world, device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        set_nccl_error_handling(cfg.dist.nccl_error_handling)
        timeout = datetime.timedelta(seconds=cfg.dist.timeout_s)
        # torch's store-based barrier after the group is made (off by default: it does not scale
        # to thousands of ranks). Without it a rank may return while a peer is still joining;
        # if it then ends (a refusal after set-up, a short script), that peer fails with
        # gloo's "Connection closed by peer" instead of joining. With it, set-up returns on
        # every rank only once all have joined, and a rank that never does is PeerLost here.
        os.environ.setdefault("TORCH_DIST_INIT_BARRIER", "1")
        try:
            dist.init_process_group(backend, timeout=timeout, rank=rank, world_size=world,
                                    device_id=device if device.type == "cuda" else None)
        except (RuntimeError, dist.DistError) as exc:
            raise PeerLost(f"rank {rank}: could not join the {world}-process group within {cfg.dist.timeout_s}s "
                           f"({_first_line(exc)}); check MASTER_ADDR/MASTER_PORT or the rendezvous endpoint") from None
    elif dist.get_world_size() != world or dist.get_rank() != rank:
        raise ConfigError(f"process group is rank {dist.get_rank()}/{dist.get_world_size()}, environment says {rank}/{world}")
    if rank != 0:  # one copy of the logs: the other ranks speak only for warnings and errors
        logging.getLogger("medtrain").setLevel(logging.WARNING)
    _current = Context(rank, local, world, device, cfg.dist.timeout_s)
    log.info("distributed: %d processes, backend %s, timeout %ds", world, dist.get_backend(), cfg.dist.timeout_s)
    return _current, device


# NCCL's watchdog, on a failed or timed-out collective: 0 ignore (the GPU waits forever), 1 abort
# the communicator and kill the process, 2 abort the communicator only, 3 (torch's default) kill
# the process without aborting. 1 and 3 end the rank inside a C++ thread (SIGABRT, no message);
# 2 unblocks the GPU and the next collective raises DistBackendError in Python, which `guard`
# turns into PeerLost and the CLI into one line and exit 3. torchrun's elastic agent gives every
# worker 1 unless its own environment had a value, so a default that defers to the environment
# never takes effect: the engine writes `--dist.nccl_error_handling` (default 2) over whatever is
# there, on every backend (gloo ignores it; the same code runs under the CPU tests).
NCCL_ERROR_HANDLING_VAR = "TORCH_NCCL_ASYNC_ERROR_HANDLING"


def set_nccl_error_handling(value: int) -> None:
    """The environment NCCL reads when the group is created: call before init_process_group."""
    before = os.environ.get(NCCL_ERROR_HANDLING_VAR)
    os.environ[NCCL_ERROR_HANDLING_VAR] = str(value)
    was = "unset" if before is None else f"was {before}, from the launcher's environment"
    log.info("distributed: %s=%d (--dist.nccl_error_handling; %s)", NCCL_ERROR_HANDLING_VAR, value, was)


def shutdown() -> None:
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = Context()


def _first_line(exc: BaseException) -> str:
    """The backend's message without its source location, cut at a sentence end."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", line)
    if len(line) > 160:
        cut = line.rfind(". ", 0, 160)
        line = line[:cut + 1] if cut > 40 else line[:160] + "..."
    return line


# Words the gloo/NCCL/store errors carry; a RuntimeError without them is not ours to rename.
_COMM_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe", "store")


def is_peer_failure(exc: BaseException) -> bool:
    if isinstance(exc, PeerLost):
        return True
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _COMM_WORDS)


@contextmanager
def guard():
    """Turn a collective failure into `PeerLost` naming the run folder to resume from."""
    try:
        yield
    except Exception as exc:
        ctx = _current
        if not ctx.enabled or not is_peer_failure(exc) or isinstance(exc, PeerLost):
            raise
        where = f"; the last checkpoint resumes with --resume {ctx.run_dir}" if ctx.run_dir else ""
        raise PeerLost(f"rank {ctx.rank}/{ctx.world_size}: another process failed or stopped answering "
                       f"(timeout {ctx.timeout_s}s): {_first_line(exc).rstrip('.')}{where}") from None
    else:
        shutdown()


# ----------------------------------------------------------------------------- model

def convert_sync_bn(model: nn.Module, sync_bn: bool) -> nn.Module:
    """Call before the Trainer builds its optimizer and compiled forward."""
    if enabled() and sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log.info("BatchNorm layers synchronised across %d processes", dist.get_world_size())
    return model


class Replicas:
    """DDP as the Trainer uses it, chosen when the run is built (engine/run/build.py) and handed to
    the Trainer: its forward goes through DDP (compiled when --compile), its optimizer skips a
    step when any rank's loss was non-finite, and its accumulators are summed over ranks at the
    epoch end. The trainer keeps the bare module for state_dicts and EMA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ddp: nn.parallel.DistributedDataParallel | None = None

    def wrap(self, model: nn.Module, compile: bool):
        # Per-rank BN running stats are averaged at epoch end (average_buffers) instead of being
        # broadcast from rank 0 at every forward: one collective per epoch, not per step. Newer
        # torch renames the option (and deprecates the old name); 2.11 knows only the old one.
        no_forward_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _ddp_options()
                           else {"broadcast_buffers": False})
        device = self.device
        gpu = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=gpu, **no_forward_sync)
        # torch.compile over DDP: dynamo's DDPOptimizer splits the graph at bucket boundaries so
        # gradient all-reduce still overlaps the backward.
        return torch.compile(self.ddp, dynamic=False, backend=_compile_backend()) if compile else self.ddp

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(_unanimous_found_inf)

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        summed = {k: v.clone() for k, v in tensors.items()}
        for value in summed.values():
            dist.all_reduce(value)
        return summed

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX)  # every rank stops on the same streak
        return out


def replicas(device: torch.device) -> Replicas | None:
    """The DDP strategy when launched by torchrun with more than one process; None otherwise."""
    return Replicas(device) if enabled() else None


def _ddp_options() -> set[str]:
    return set(inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters)


def _compile_backend() -> str:
    try:
        from engine.run.loop import COMPILE_BACKEND
        return COMPILE_BACKEND
    except ImportError:
        return "inductor"


def _unanimous_found_inf(optimizer, args, kwargs) -> None:
    # A rank whose loss was finite would otherwise apply the NaN gradients it received from a
    # rank whose loss was not; the max over ranks makes every rank skip together. Device-side
    # all-reduce: no host sync (gloo on CPU blocks, as every CPU op does).
    found_inf = getattr(optimizer, "found_inf", None)
    if isinstance(found_inf, torch.Tensor):
        dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)


def seed_rank_rng(seed: int, epoch: int, step: int) -> None:
    """Dropout and mixing differ across ranks (rank 0 keeps the single-process stream)."""
    if enabled() and dist.get_rank() > 0:
        rank = dist.get_rank()
        torch.manual_seed((seed * 1_000_003 + rank * 7919 + epoch * 104_729 + step) % (2**63 - 1))


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """BatchNorm running statistics averaged over ranks, so every rank evaluates one model."""
    if not enabled():
        return
    world = dist.get_world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world)


# ----------------------------------------------------------------------------- merges

def merge_eval(cm: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor):
    """Each rank's (confusion, real-row scores, real-row labels) -> the whole split's, in order."""
    if not enabled():
        return cm, probs, labels
    cm = cm.clone()
    dist.all_reduce(cm)
    return cm, gather_rows(probs), gather_rows(labels)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (ranks may hold different row counts)."""
    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in torch.cat(counts).tolist()]  # sync point: once per evaluation
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def sum_counts(values: list[int], device: torch.device) -> list[int]:
    if not enabled():
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_rank0(value: str) -> str:
    """Rank 0's value on every rank (e.g. the default run folder, named from rank 0's clock)."""
    if not enabled():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on one (sync point: called at log intervals)."""
    if not enabled():
        return flag
    t = torch.tensor([int(bool(flag))], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def stop_requested(signal_name: str | None, step: int, interval: int, device: torch.device,
                   epoch_end: bool = False) -> bool:
    """Single process: at every step. Several: ranks agree at log intervals and epoch ends, so
    all of them stop after the same step and rank 0's checkpoint is the state every rank had."""
    if not enabled():
        return signal_name is not None
    if step % interval and not epoch_end:
        return False
    return any_rank(signal_name is not None, device)
