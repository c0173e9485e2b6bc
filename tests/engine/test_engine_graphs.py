"""The CUDA-graph step (GPU tests, skipped without CUDA) and how the CPU refuses it."""
from __future__ import annotations

import json

import pytest
import torch

from bench import step as bench_step
from engine.options.config import Config
from engine.run.env import seed_everything
from engine.run.loop import Trainer
from engine.train import main
from models.registry import build_model

CLASSES, SIZE, BATCH = 5, 28, 32


@pytest.fixture(autouse=True)
def deterministic_applied():
    """`cfg.train.deterministic` is applied by the runner (engine/run/env.py); these tests build the
    Trainer directly, so they apply it themselves: the captured step must work under it."""
    before = torch.are_deterministic_algorithms_enabled()
    if torch.cuda.is_available():
        seed_everything(0, deterministic=True)
    yield
    torch.use_deterministic_algorithms(before)


def make_trainer(cuda_graph: bool, **train) -> Trainer:
    torch.manual_seed(0)
    cfg = Config()
    cfg.train.epochs, cfg.train.cuda_graph, cfg.train.deterministic = 2, cuda_graph, True
    for key, value in train.items():
        setattr(cfg.train, key, value)
    model = build_model("seedcnn", CLASSES, SIZE, dropout=0.0).cuda()
    return Trainer(model, cfg, torch.device("cuda"), CLASSES, steps_per_epoch=10)


def batches(n: int, poison_at: int = -1):
    g = torch.Generator(device="cuda").manual_seed(1)
    for i in range(n):
        images = torch.randn(BATCH, 3, SIZE, SIZE, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
        if i == poison_at:
            images[0, 0, 0, 0] = float("nan")
        yield images, torch.randint(0, CLASSES, (BATCH,), device="cuda", generator=g)


@pytest.mark.gpu
def test_graphed_steps_match_eager_steps():
    torch.backends.cudnn.benchmark = False
    eager, graphed = make_trainer(False, ema=0.9), make_trainer(True, ema=0.9)
    for images, labels in batches(8):
        eager.train_step(images, labels)
        graphed.train_step(images, labels)
    assert graphed.graph.captured
    for a, b in zip(eager.model.parameters(), graphed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.ema, graphed.ema):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5)
    ea, ga = eager.read_accumulators(), graphed.read_accumulators()
    assert ea["seen"] == ga["seen"] == 8 * BATCH and ga["loss"] == pytest.approx(ea["loss"], rel=1e-4)
    # The schedule replays from the device table: lr after 8 steps is entry 7, not the captured value.
    assert float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(float(graphed.lr_table[7]))
    assert int(graphed.step_counter) == 8


@pytest.mark.gpu
def test_graphed_losses_equal_eager_losses_step_by_step_under_deterministic():
    assert torch.are_deterministic_algorithms_enabled()
    eager, graphed = make_trainer(False), make_trainer(True)
    for step, (images, labels) in enumerate(batches(10)):
        eager.reset_accumulators()
        graphed.reset_accumulators()
        eager.train_step(images, labels)
        graphed.train_step(images, labels)
        e, g = eager.read_accumulators(), graphed.read_accumulators()  # sync: the test reads every step
        assert g["loss"] == pytest.approx(e["loss"], rel=1e-5), step
        assert (g["seen"], g["accuracy"]) == (e["seen"], e["accuracy"]), step
    assert graphed.graph.captured


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(ema=0.9, mixup=0.4, cutmix=1.0), dict(amp=True, amp_dtype="fp16")])
def test_eager_step_never_syncs_with_the_host(options):
    trainer = make_trainer(False, **options)
    data = list(batches(3))
    trainer.train_step(*data[0])  # lazy state (optimizer moments, scaler) is created once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call in the step raises
    try:
        for images, labels in data[1:]:
            trainer.train_step(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.read_accumulators()["seen"] == 3 * BATCH


@pytest.mark.gpu
def test_graph_skips_a_non_finite_step_and_counts_it():
    trainer = make_trainer(True)
    data = list(batches(7, poison_at=5))
    for images, labels in data[:5]:
        trainer.train_step(images, labels)
    assert trainer.graph.captured
    before = [p.detach().clone() for p in trainer.model.parameters()]
    steps_before = [s["step"].clone() for s in trainer.optimizer.state.values()]
    trainer.train_step(*data[5])  # replayed with a NaN in the batch
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert all(torch.equal(a, s["step"]) for a, s in zip(steps_before, trainer.optimizer.state.values()))
    stats = trainer.read_accumulators()
    assert stats["nonfinite"] == 1 and stats["nonfinite_streak"] == 1
    trainer.reset_accumulators()  # in place: the graph keeps accumulating into the same tensors
    trainer.train_step(*data[6])
    stats = trainer.read_accumulators()
    assert stats["seen"] == BATCH and stats["nonfinite_streak"] == 0


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(amp=True, amp_dtype="bf16", mixup=0.4, cutmix=1.0),
                                     dict(amp=True, amp_dtype="fp16"), dict(compile=True)])
def test_graph_trains_with_amp_mixing_and_compile(options):
    trainer = make_trainer(True, **options)
    first = next(trainer.model.parameters()).detach().clone()
    for images, labels in batches(8):
        trainer.train_step(images, labels)
    assert trainer.graph.captured and trainer.graph.calls == 8
    stats = trainer.read_accumulators()
    assert stats["nonfinite"] == 0 and stats["seen"] == 8 * BATCH and 0 < stats["loss"] < 10
    assert not torch.equal(first, next(trainer.model.parameters()))


@pytest.mark.gpu
def test_bench_step_measures_graph_variants(capsys):
    assert bench_step.main(["--model", "seedcnn", "--batch-size", "64", "--image-size", "28", "--steps", "5",
                            "--variants", "eager,cuda_graph,reduce_overhead"]) == 0
    line = json.loads(capsys.readouterr().out)
    row = line["images_per_second"]["fp32"]
    assert row["cuda_graph"]["captured"] is True and row["cuda_graph"]["images_per_second"] > 0
    assert isinstance(row["reduce_overhead"], dict) and "cudagraph_skips" in row["reduce_overhead"]


def test_cuda_graph_on_the_cpu_is_refused_with_one_line(tmp_path, capsys):
    code = main(["--device", "cpu", "--cuda-graph", "--out", str(tmp_path), "--wandb", "disabled"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: --cuda-graph needs a CUDA GPU; drop the flag on the CPU"]


def test_bench_step_prints_one_json_line_and_skips_graphs_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_step.main(["--model", "mlp", "--batch-size", "8", "--image-size", "16", "--steps", "2",
                            "--variants", "eager,cuda_graph,compiled_cuda_graph", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    line = json.loads(out[0])
    for precision in ("fp32", "amp_bf16"):
        row = line["images_per_second"][precision]
        assert row["eager"]["images_per_second"] > 0
        assert row["cuda_graph"] == row["compiled_cuda_graph"] == "skipped: no GPU"
    assert line["device"].startswith("cpu") and "torch" in line["versions"]


def test_bench_step_rejects_unknown_variants(capsys):
    assert bench_step.main(["--variants", "eager,warp"]) == 2
    assert "unknown variant 'warp'" in capsys.readouterr().err
