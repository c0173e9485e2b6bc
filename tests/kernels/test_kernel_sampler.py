"""The weighted epoch sampler: frequencies (chi-square), repeats, shards, determinism, lengths.

Chi-square tests use significance 0.001 (critical value from scipy's chi2.ppf(0.999, df)) with
fixed seeds, so each is deterministic: it fails only if the draws do not follow the target.
"""
import pytest
import torch
from scipy.stats import chi2

from kernels.sampler import EpochSampler, class_balanced_weights

SIGNIFICANCE = 0.001
LABELS = torch.tensor([0] * 600 + [1] * 250 + [2] * 100 + [3] * 40 + [4] * 9 + [5] * 1)


def chi_square(counts: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    stat = float(((counts.double() - expected) ** 2 / expected).sum())
    return stat, float(chi2.ppf(1 - SIGNIFICANCE, len(expected) - 1))


def class_targets(labels, alpha):
    counts = torch.bincount(labels).double()
    share = counts ** (1 - alpha)  # n_c * n_c^-alpha
    return share / share.sum()


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_class_frequencies_match_target(replacement, alpha):
    s = EpochSampler(LABELS, 6, 50, kind="balanced", alpha=alpha, replacement=replacement, seed=3)
    epochs = 40
    counts = sum(torch.bincount(LABELS[s.epoch_indices(e)], minlength=6) for e in range(epochs))
    expected = class_targets(LABELS, alpha) * epochs * s.global_length
    stat, critical = chi_square(counts, expected)
    assert stat < critical, (counts.tolist(), expected.tolist())


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_each_epoch_gives_every_class_its_expected_count(replacement, alpha):
    # Stratified / systematic draws: within 2 of L * P_c every epoch, not only on average.
    for seed in range(5):
        s = EpochSampler(LABELS, 6, 10, kind="balanced", alpha=alpha, replacement=replacement, seed=seed)
        counts = torch.bincount(LABELS[s.epoch_indices(seed)], minlength=6).double()
        assert (counts - class_targets(LABELS, alpha) * s.global_length).abs().max() <= 2


def test_per_sample_weights_with_replacement_chi_square():
    weights = torch.arange(1, 21, dtype=torch.float32)
    weights[4] = 0  # never drawn
    s = EpochSampler(torch.zeros(20, dtype=torch.int64), 1, 100, weights=weights, seed=1, epoch_length=20000)
    counts = torch.bincount(s.epoch_indices(0), minlength=20)
    assert counts[4] == 0
    keep = weights > 0
    expected = weights[keep].double() / weights.sum() * s.global_length
    stat, critical = chi_square(counts[keep], expected)
    assert stat < critical


def test_without_replacement_repeats_are_minimal():
    weights = class_balanced_weights(LABELS, 6, 1.0)
    for length in (400, 1000, 2500):  # shorter than, equal to, longer than the dataset
        s = EpochSampler(LABELS, 6, 1, kind="balanced", replacement=False, seed=2, epoch_length=length)
        counts = torch.bincount(s.epoch_indices(0), minlength=len(LABELS))
        m = weights.double() / weights.sum() * length
        assert counts.sum() == length
        assert ((counts >= m.floor() - 1e-9) & (counts <= m.ceil() + 1e-9)).all()


def test_without_replacement_short_epoch_has_no_duplicates():
    weights = torch.rand(5000, generator=torch.Generator().manual_seed(0)) + 0.5
    s = EpochSampler(torch.zeros(5000, dtype=torch.int64), 1, 100, weights=weights, replacement=False,
                     seed=0, epoch_length=1000)
    order = s.epoch_indices(0)
    assert len(order.unique()) == len(order) == 1000


@pytest.mark.parametrize("kind,replacement", [("uniform", True), ("balanced", True), ("balanced", False)])
def test_shards_disjoint_equal_and_cover_the_epoch(kind, replacement):
    world = 3
    shards = [EpochSampler(LABELS, 6, 16, kind=kind, replacement=replacement, seed=9, rank=r, world_size=world)
              for r in range(world)]
    parts = [s.epoch_indices(4) for s in shards]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == shards[0].per_rank
    assert torch.equal(torch.cat(parts), shards[0].global_order(4))  # disjoint slices, together the epoch
    if kind == "uniform":  # one pass of a permutation: no index on two ranks
        assert len(torch.cat(parts).unique()) == shards[0].global_length


def test_uniform_covers_every_sample_once_per_pass():
    s = EpochSampler(LABELS, 6, 1, seed=0)
    assert torch.equal(s.epoch_indices(0).sort().values, torch.arange(len(LABELS)))


@pytest.mark.parametrize("kind,replacement", [("uniform", True), ("balanced", True), ("balanced", False)])
def test_deterministic_per_seed_and_epoch(kind, replacement):
    def make(seed):
        return EpochSampler(LABELS, 6, 8, kind=kind, replacement=replacement, seed=seed)
    assert torch.equal(make(1).epoch_indices(2), make(1).epoch_indices(2))
    assert not torch.equal(make(1).epoch_indices(2), make(1).epoch_indices(3))
    assert not torch.equal(make(1).epoch_indices(2), make(2).epoch_indices(2))


@pytest.mark.parametrize("length,batch,world,steps", [(0, 64, 1, 15), (5000, 64, 2, 39), (3, 8, 1, 1), (10001, 7, 1, 1428)])
def test_any_epoch_length_whole_batches(length, batch, world, steps):
    s = EpochSampler(LABELS, 6, batch, kind="balanced", seed=0, world_size=world, epoch_length=length)
    assert s.steps == steps and len(s.epoch_indices(0)) == steps * batch
    assert s.epoch_indices(0).max() < len(LABELS)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="not all zero"):
        EpochSampler(LABELS[:5], 6, 1, weights=torch.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        EpochSampler(LABELS[:5], 6, 1, weights=torch.ones(4))
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(LABELS, 6, 1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="kind"):
        EpochSampler(LABELS, 6, 1, kind="weighted")


@pytest.mark.gpu
@pytest.mark.parametrize("replacement", [True, False])
def test_cuda_epoch_order_without_host_sync(replacement):
    labels = LABELS.cuda()
    s = EpochSampler(labels, 6, 50, kind="balanced", replacement=replacement, seed=0)
    s.epoch_indices(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        order = s.epoch_indices(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    counts = torch.bincount(labels[order], minlength=6).cpu()
    assert (counts - s.global_length / 6).abs().max() < 0.25 * s.global_length / 6
