"""Two gloo CPU processes against one: sharded sampling, one DDP step, merged evaluation.

One start of two processes runs every check (workers.run_all) and the same code runs here in
one process as the reference; the tests compare the saved results. The two are forks of one
warm interpreter (tests/dist/warm_ranks.py): one torch and engine import instead of two (issue 25).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import workers  # noqa: E402

WORLD = 2
# One SGD/AdamW step of the same global batch, summed in another order across two processes:
# float32 rounding only. AdamW's first step is lr * g/|g| elementwise, so its bound is looser.
STEP_ATOL = {"sgd": 1e-6, "adamw": 1e-5}


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    spec = {"module": "ddp_rank", "argv": [str(out)], "world": WORLD, "dir": str(out), "env": {}}
    server = subprocess.Popen([sys.executable, str(HERE / "warm_ranks.py"), json.dumps(["torch", "torch._dynamo", "workers"])],
                              cwd=HERE.parents[1], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own group: a failure below ends the ranks with it
    try:
        assert server.stdout.readline() == "ready\n", f"the rank server did not start (exit {server.poll()})"
        server.stdin.write(json.dumps(spec) + "\n")
        server.stdin.close()  # the only request: the server ends once it has reaped both ranks
        assert server.wait(timeout=600) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)  # not reaped yet: the group is still ours
            server.wait()
        server.stdout.close()
    codes = [(out / f"rank{r}.status").read_text() for r in range(WORLD)]
    assert codes == ["0"] * WORLD, [codes] + [(out / f"rank{r}.err").read_text()[-2000:] for r in range(WORLD)]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    workers.run_all(0, 1, str(out))  # the single-process reference, here
    single = torch.load(out / "rank0.pt", weights_only=False)
    return ranks, single


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("kind", ["uniform", "balanced"])
@pytest.mark.parametrize("epoch", [0, 1])
def test_rank_slices_are_disjoint_and_cover_the_global_epoch(results, kind, epoch):
    ranks, single = results
    mine = [r["sampling"][(kind, epoch)] for r in ranks]
    whole = single["sampling"][(kind, epoch)]
    # Same steps and global batch as one process: per-rank batch is the global batch / world.
    assert all(m["steps"] == whole["steps"] for m in mine)
    assert all(m["batch"] * WORLD == whole["batch"] == workers.GLOBAL_BATCH for m in mine)
    # Rank slices, concatenated, are exactly the one-process epoch order: disjoint positions
    # that cover it, with the same per-epoch reshuffle on every rank.
    assert torch.equal(torch.cat([m["order"] for m in mine]), whole["order"])
    assert torch.equal(torch.cat([m["labels"] for m in mine]).sort().values, whole["labels"].sort().values)
    if kind == "uniform":  # a permutation: the ranks share no sample
        a, b = (set(m["order"].tolist()) for m in mine)
        assert not a & b and len(a | b) == len(whole["order"])


def test_epochs_reshuffle_in_step_across_ranks(results):
    ranks, _ = results
    for r in ranks:
        assert not torch.equal(r["sampling"][("uniform", 0)]["order"], r["sampling"][("uniform", 1)]["order"])


# ----------------------------------------------------------------------------- one step

@pytest.mark.parametrize("name", ["step_mlp_sgd", "step_mlp_adamw"])
def test_one_ddp_step_matches_one_process_on_the_global_batch(results, name):
    ranks, single = results
    atol = STEP_ATOL[name.rsplit("_", 1)[1]]
    a, b = (r[name]["after"] for r in ranks)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between ranks"
        assert not torch.equal(a[key], ranks[0][name]["before"][key]), f"{key} did not move"
        torch.testing.assert_close(a[key], single[name]["after"][key], atol=atol, rtol=0)
    # Epoch statistics are summed over ranks: the global batch, counted once.
    assert ranks[0][name]["stats"]["seen"] == single[name]["stats"]["seen"] == workers.GLOBAL_BATCH
    assert ranks[0][name]["stats"]["loss"] == pytest.approx(single[name]["stats"]["loss"], rel=1e-5)


def test_batchnorm_model_ranks_stay_identical(results):
    ranks, _ = results
    a, b = (r["step_seedcnn_adamw"]["after"] for r in ranks)
    for key, value in a.items():
        if "running" not in key:  # BN running stats are per rank until the epoch-end average
            assert torch.equal(value, b[key]), key


def test_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(results):
    ranks, _ = results
    for r in ranks:
        step = r["step_poisoned"]
        params = {k: v for k, v in step["after"].items()}
        for key, value in params.items():
            assert torch.equal(value, step["before"][key]), f"{key} changed although rank 1's loss was NaN"
        assert step["stats"]["nonfinite_streak"] == 1


# ----------------------------------------------------------------------------- evaluation

def test_merged_evaluation_equals_one_process(results):
    ranks, single = results
    one = single["evaluation"]
    # The ranks' real rows are disjoint contiguous blocks that, in rank order, are the split.
    rows = torch.cat([r["evaluation"]["real_rows"] for r in ranks])
    assert torch.equal(rows, torch.arange(len(one["labels"])))
    for r in ranks:
        ev = r["evaluation"]
        assert torch.equal(ev["labels"], one["labels"])
        assert torch.equal(ev["probs"], one["probs"])
        assert ev["metrics"].keys() == one["metrics"].keys()
        for key, value in one["metrics"].items():  # exact: same scores, same order
            assert ev["metrics"][key] == pytest.approx(value, abs=0, rel=0, nan_ok=True), key
    assert one["metrics"]["n"] == len(one["labels"]) == 37


def test_evaluation_with_a_fixed_global_eval_batch_agrees_to_float32_rounding(results):
    # The CLI divides --data.eval_batch_size among ranks, so each runs smaller batches than one
    # process would: counts are exact, score-based metrics agree to float32 rounding.
    ranks, single = results
    one = single["evaluation_global_batch"]["metrics"]
    for r in ranks:
        merged = r["evaluation_global_batch"]["metrics"]
        for key, value in one.items():
            assert merged[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
        for key in ("accuracy", "balanced_accuracy", "f1_macro", "n"):
            assert merged[key] == one[key], key
