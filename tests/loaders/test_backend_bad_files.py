"""A file that turns bad after the dataset scan is reported once and skipped: no crash, no shift."""
import pytest
import torch

from loaders import base
from engine.options.resolve import loader_spec, sampler_spec

from conftest import ALL


def _spoil(paths):
    """Truncated JPEG, empty file, text pretending to be a JPEG."""
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[: len(data) // 2])
    open(paths[1], "wb").close()
    open(paths[2], "w").write("not an image at all\n")


@pytest.mark.parametrize("name", ALL)
def test_bad_files_reported_once_and_skipped(tiny, name, caplog):
    cfg, ds, device = tiny
    bad = ds.val.files[:3]
    _spoil(bad)
    good_labels = ds.val.labels[3:].tolist()
    loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False)
    for _ in range(2):  # twice: still reported only once
        batches = list(loader)
        labels = torch.cat([y for _, y in batches])
        assert all(x.shape == (8, 3, 32, 32) and torch.isfinite(x).all() for x, _ in batches)
        # Every real label kept is the right one, in order: bad rows are masked (-1).
        assert labels[labels >= 0].tolist() == good_labels
    assert sorted(loader.bad.items) == sorted(bad)
    assert all(loader.bad.items[p] for p in bad)
    for path in bad:
        assert sum(path in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("name", ALL)
def test_bad_file_in_training_masks_only_its_row(tiny, name):
    cfg, ds, device = tiny
    _spoil(ds.train.files[:3])
    sampler = base.make_sampler(ds, sampler_spec(cfg), device)
    loader = base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=sampler)
    order, _ = loader.epoch_order()
    labels = torch.cat([y for _, y in loader])
    expected = loader.labels[order]
    # Masked, never dropped: the sampler's indices still address the same files.
    assert len(loader.split) == len(ds.train)
    bad_rows = torch.isin(order, torch.arange(3))
    assert bad_rows.any()
    assert (labels[bad_rows] == -1).all() and torch.equal(labels[~bad_rows], expected[~bad_rows])
