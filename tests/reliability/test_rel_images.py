"""Broken and unusual image files: each is converted or skipped with its reason, never
decoded into the wrong label; a dataset where every file is bad is one clear error."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engine.options.config import ConfigError
from loaders import images
from loaders.datasets import load_dataset
from engine.options.resolve import loader_spec, sampler_spec

from . import broken

# -- single files: the reason each bad one is refused with ------------------------------------

REFUSED = {
    "zero-byte": (b"", "empty file (0 bytes)"),
    "truncated JPEG": (broken.truncated_jpeg(), "truncated JPEG (no end-of-image marker)"),
    "text named .jpg": (b"hello, I am a text file\n", "not a readable image (file starts with b'hello,')"),
    "huge JPEG": (broken.jpeg_claiming_size(60000, 60000), "image too large (3600000000 pixels"),
    "huge PNG": (broken.png_claiming_size(50000, 50000), "image too large (2500000000 pixels; decompression bomb guard)"),
    "1x1 image": (broken.jpeg(np.zeros((1, 1, 3), np.uint8)), "image too small (1x1 pixels"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_bad_image_is_refused_with_its_reason(kind):
    data, reason = REFUSED[kind]
    for full in (False, True):
        with pytest.raises(images.BadImage) as info:
            images.check_bytes(data, full=full)
        assert str(info.value).startswith(reason), (full, str(info.value))


def test_png_named_jpg_is_decoded_by_content():
    arr = broken.rgb_array(24)
    assert images.check_bytes(broken.png(arr)) == (24, 24)
    assert np.array_equal(images.decode(broken.png(arr), None), arr)  # PNG is lossless


def test_cmyk_jpeg_is_converted_to_rgb_keeping_colours():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = (200, 30, 30)
    arr[:, 16:] = (20, 180, 40)
    out = images.decode(broken.jpeg(arr, mode="CMYK", quality=95), None)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out[4:28, 2:12].astype(int) - (200, 30, 30)).max() < 12
    assert np.abs(out[4:28, 20:30].astype(int) - (20, 180, 40)).max() < 12


def test_grayscale_jpeg_becomes_three_equal_channels():
    out = images.decode(broken.jpeg(broken.rgb_array(32), mode="L"), 16)
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_16bit_png_is_scaled_not_clipped():
    out = images.decode(broken.png16(32), None)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    # Clipping 0..65535 to 0..255 would saturate almost every pixel; scaling keeps the ramp.
    assert out.min() == 0 and out.max() == 255
    assert 100 < out.mean() < 155


# -- a folder mixing every kind: exact skip count, reasons, and no label shift -----------------

def _mixed_folder(root: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    broken.good_folder(root, n=30, classes=("a", "b", "c"))
    rows = [[f"images/im{i:03d}.jpg", "abc"[i % 3]] for i in range(30)]
    odd = {  # name -> (bytes, label); converted files train, bad ones are skipped
        "cmyk.jpg": (broken.jpeg(broken.rgb_array(32, 1), mode="CMYK"), "b"),
        "gray.jpg": (broken.jpeg(broken.rgb_array(32, 2), mode="L"), "c"),
        "png_named.jpg": (broken.png(broken.rgb_array(32, 0)), "a"),
        "deep.png": (broken.png16(32), "b"),
        "empty.jpg": (b"", "a"),
        "cut.jpg": (broken.truncated_jpeg(), "b"),
        "notes.jpg": (b"hello, I am a text file\n", "c"),
        "bomb.jpg": (broken.jpeg_claiming_size(60000, 60000), "a"),
        "tiny.jpg": (broken.jpeg(np.zeros((1, 1, 3), np.uint8)), "b"),
    }
    for name, (data, label) in odd.items():
        (root / "images" / name).write_bytes(data)
        rows.append([f"images/{name}", label])
    broken.write_csv(root / "labels.csv", rows, ("file", "label"))
    expected_label = {str((root / r[0]).resolve()): r[1] for r in rows}
    bad = {"empty.jpg": "empty file", "cut.jpg": "truncated JPEG", "notes.jpg": "not a readable image",
           "bomb.jpg": "image too large (3600000000 pixels", "tiny.jpg": "image too small"}
    return root, expected_label, bad


def test_mixed_folder_skips_exactly_the_bad_files_and_keeps_labels(tmp_path, caplog):
    root, expected_label, bad = _mixed_folder(tmp_path / "mixed")
    with caplog.at_level(logging.WARNING, logger="medtrain.data"):
        ds = load_dataset(broken.data_cfg(root))
    skipped = {Path(p).name: reason for p, reason in ds.skipped}
    assert sorted(skipped) == sorted(bad)
    for name, start in bad.items():
        assert skipped[name].startswith(start), (name, skipped[name])
    assert f"skipped {len(bad)} input(s)" in caplog.text
    kept = [f for part in (ds.train, ds.val, ds.test) for f in part.files]
    assert len(kept) == 30 + 4  # the 30 good files and the 4 converted ones
    for part in (ds.train, ds.val, ds.test):  # each kept file still carries its own label
        for f, y in zip(part.files, part.labels):
            assert ds.classes[y] == expected_label[f]
    assert ds.native_size == 32


def test_native_size_is_the_common_size_not_the_first_file(tmp_path):
    root = broken.good_folder(tmp_path / "sizes", n=12)
    odd = broken.jpeg(broken.rgb_array(200, 0))  # listed first, but one of a kind
    (root / "images" / "big.jpg").write_bytes(odd)
    lines = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([lines[0], "images/big.jpg,a", *lines[1:]]) + "\n")
    assert load_dataset(broken.data_cfg(root)).native_size == 32


def test_every_file_bad_is_one_clear_error(tmp_path):
    root = broken.good_folder(tmp_path / "allbad", n=6)
    for f in (root / "images").iterdir():
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"all 6 images are unreadable \(e\.g\. .*im000\.jpg: truncated JPEG"):
        load_dataset(broken.data_cfg(root))


def test_every_file_bad_from_the_cli(tmp_path):
    root = broken.good_folder(tmp_path / "allbad", n=6)
    for f in (root / "images").iterdir():
        f.write_bytes(b"")
    line = broken.error_line(broken.run_cli(["--data", root, "--out", tmp_path / "run", "--device", "cpu"]))
    assert "all 6 images are unreadable" in line and "empty file (0 bytes)" in line


@pytest.mark.parametrize("backend", ["tensor", "plain"])
def test_pixel_data_broken_behind_a_good_header_is_masked_with_its_label(tmp_path, backend):
    """Passes the cheap header check, fails at decode: reported once, its row masked (label -1)
    in every batch, so it adds no loss and no metric, and no other label moves."""
    import torch

    from engine.options.config import Config
    from loaders import base

    root = broken.good_folder(tmp_path / "late", n=12, classes=("a", "b"))
    (root / "images" / "late.png").write_bytes(broken.png_claiming_size(40, 40))  # header fine, no pixels
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/late.png,b\n")
    cfg = Config()
    cfg.data = broken.data_cfg(root, val_fraction=0.0, test_fraction=0.0, batch_size=4)
    ds = load_dataset(cfg.data)
    assert not ds.skipped and len(ds.train) == 13
    device = torch.device("cpu")
    loader = base.build_loader(backend, ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    drawn = 0
    for epoch in range(3):  # the sampler draws over all 13 rows; the late one is always masked
        loader.set_epoch(epoch)
        order, _ = loader.epoch_order()
        drawn += int((order == 12).sum())
        seen = torch.cat([labels for _, labels in loader])
        expected = torch.as_tensor(ds.train.labels)[order]
        expected[order == 12] = base.PAD_LABEL
        assert torch.equal(seen, expected)
    assert drawn >= 2  # the masking above was exercised, more than once
    # Reported once (not once per epoch), with its reason.
    assert list(loader.bad.items.values()) == ["decode failed: OSError: image file is truncated (0 bytes not processed)"]
    cfg.data.verify = "full"  # the full check catches it before training instead
    ds_full = load_dataset(cfg.data)
    assert [Path(p).name for p, _ in ds_full.skipped] == ["late.png"]


def test_file_deleted_after_the_check_is_masked_with_its_reason(tmp_path):
    """A network share hiccup or a cleanup job: the file vanishes between the check and the decode."""
    import torch

    from engine.options.config import Config
    from loaders import base

    root = broken.good_folder(tmp_path / "gone", n=12, classes=("a", "b"))
    cfg = Config()
    cfg.data = broken.data_cfg(root, val_fraction=0.0, test_fraction=0.0, batch_size=4)
    ds = load_dataset(cfg.data)
    (root / "images" / "im005.jpg").unlink()
    device = torch.device("cpu")
    loader = base.build_loader("tensor", ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    assert {Path(p).name: r for p, r in loader.bad.items.items()} == {
        "im005.jpg": "cannot read file (No such file or directory)"}
    assert loader.failed.tolist() == [i == 5 for i in range(12)]
