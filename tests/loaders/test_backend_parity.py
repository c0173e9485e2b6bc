"""Real HAM10000 JPEGs through plain, dali (CPU) and ffcv in evaluation mode.

Same labels in the same order, and pixels within a stated tolerance. Why a tolerance: each
backend decodes with its own libjpeg-turbo build and settings. plain (simplejpeg), nvjpeg on
the CPU (torchvision) and DALI's CPU decoder agree to float rounding on these files; FFCV's
libffcv calls turbojpeg with its own decode flags and differs by about one grey level on
average and up to ~10 levels at a few high-contrast edges (measured on 600 HAM images: mean
1.02, 99.9th percentile 4, max 9 levels of 255). Bounds, in levels of 255 (the normalized
difference times the channel std times 255): mean <= 2, 99.9th percentile <= 8, max <= 24
for ffcv; max <= 1 for dali. A wrong crop, a flip, a channel swap or a shifted row moves the
mean by tens of levels, so these bounds still catch every real mismatch.
"""
import numpy as np
import pytest
import torch

from engine.options.config import parse_args
from engine.options.resolve import loader_spec
from loaders import base
from loaders.datasets import load_dataset

from conftest import needs

BOUNDS = {"dali": (0.5, 1.0, 1.0), "ffcv": (2.0, 8.0, 24.0), "nvjpeg": (0.5, 1.0, 1.0)}


@pytest.fixture(scope="module")
def plain_reference():
    """ham_dir -> (cfg, dataset, plain's images, labels) of the HAM evaluation split: read once
    for the three backends."""
    done = {}

    def get(ham_dir):
        if ham_dir not in done:
            cfg = parse_args(["--data", str(ham_dir), "--batch-size", "32", "--device", "cpu",
                              "--data.max_samples", "400", "--data.workers", "2"]).config
            ds = load_dataset(cfg.data)
            ref_x, ref_y = zip(*base.build_loader("plain", ds, "val", loader_spec(cfg), torch.device("cpu"), train=False))
            done[ham_dir] = cfg, ds, torch.cat(ref_x), torch.cat(ref_y)
        return done[ham_dir]

    return get


@pytest.mark.parametrize("name", [needs("dali"), needs("ffcv"), needs("nvjpeg")])
def test_eval_parity_with_plain_on_real_ham(ham_dir, plain_reference, name):
    cfg, ds, ref_x, ref_y = plain_reference(ham_dir)
    got_x, got_y = zip(*base.build_loader(name, ds, "val", loader_spec(cfg), torch.device("cpu"), train=False))
    got_y = torch.cat(got_y)
    assert got_y.tolist() == ref_y.tolist()
    assert ref_y[:len(ds.val)].tolist() == ds.val.labels.tolist()
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    diff = ((torch.cat(got_x) - ref_x) * std).abs()[: len(ds.val)]
    mean, top, worst = BOUNDS[name]
    p999 = diff.flatten().kthvalue(int(diff.numel() * 0.999)).values
    assert diff.mean() <= mean and p999 <= top and diff.max() <= worst, \
        (name, float(diff.mean()), float(p999), float(diff.max()))


# -- EXIF orientation: every backend shows the image as a viewer does ----------------------------

def _sideways_photo(orientation: int) -> bytes:
    """A portrait photo stored as the sensor saw it: red top-left quadrant once displayed."""
    import io

    from PIL import Image, ImageOps

    shown = np.full((48, 32, 3), 20, np.uint8)
    shown[:24, :16] = (240, 20, 20)
    # Store the inverse of what the tag asks for, so the displayed image is always `shown`.
    inverse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    tagged = Image.fromarray(shown)
    tagged.getexif()[0x0112] = inverse
    stored = ImageOps.exif_transpose(tagged)
    exif = stored.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _red_quadrant(batch: torch.Tensor) -> list[int]:
    """Per image, the quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) most red."""
    x = batch.float()
    redness = x[:, 0] - x[:, 2]
    h, w = redness.shape[-2:]
    quads = torch.stack([redness[:, :h // 2, :w // 2].mean((1, 2)), redness[:, :h // 2, w // 2:].mean((1, 2)),
                         redness[:, h // 2:, :w // 2].mean((1, 2)), redness[:, h // 2:, w // 2:].mean((1, 2))], 1)
    return quads.argmax(1).tolist()


@pytest.mark.parametrize("name", ["tensor"] + [needs(n) for n in ("plain", "nvjpeg", "dali", "ffcv", "baseline")])
def test_exif_rotated_jpegs_read_upright_in_every_backend(tmp_path, name):
    _check_upright(tmp_path, name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tensor", needs("nvjpeg"), needs("dali")])
def test_exif_rotated_jpegs_read_upright_on_the_gpu(tmp_path, name):
    """nvJPEG on the GPU ignores EXIF: the loader orients the decoded tensor itself."""
    _check_upright(tmp_path, name, "cuda")


def _check_upright(tmp_path, name: str, device: str) -> None:
    import csv

    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = []
    for i in range(8):
        name_i = f"images/filler{i}.jpg"
        Image.new("RGB", (32, 48), (i * 20, 90, 90)).save(tmp_path / name_i)
        rows.append([name_i, "ab"[i % 2], "train"])
    for o in range(1, 9):
        (tmp_path / "images" / f"o{o}.jpg").write_bytes(_sideways_photo(o))
        rows.append([f"images/o{o}.jpg", "ab"[o % 2], "val"])
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "split"]] + rows)
    cfg = parse_args(["--data", str(tmp_path), "--batch-size", "8", "--device", device, "--data.workers", "1",
                      "--data.eval_crop", "1.0"]).config
    ds = load_dataset(cfg.data)
    assert [f.rsplit("/", 1)[-1] for f in ds.val.files] == [f"o{o}.jpg" for o in range(1, 9)]
    batches = [x for x, _ in base.build_loader(name, ds, "val", loader_spec(cfg, ds.native_size), torch.device(device), train=False)]
    assert _red_quadrant(torch.cat(batches)[:8].cpu()) == [0] * 8, (name, device)
