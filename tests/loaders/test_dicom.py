"""DICOM (.dcm) as scanners export it: 8/16-bit, MONOCHROME1/2, rescale, window, RGB, JPEG-compressed,
multi-frame - read by the rule in loaders/dicom.py, in folders, CSVs, predict and the loaders."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

from engine.plan import fingerprint_data  # noqa: E402
from engine import predict
from tests.helpers import tiny_args, train  # noqa: E402
from loaders import filetypes, images  # noqa: E402

import dicom_files  # noqa: E402  (tests/loaders is on sys.path: no package here)

RUN = tiny_args("mlp", "--image-size", "16", "--data.workers", "1", "--run.plan", "off")


def _pixels(path: Path) -> np.ndarray:
    data = images.read_bytes(str(path))
    images.check_bytes(data, full=True)
    return images.decode(data, None)


def test_dicom_is_an_image_type():
    assert filetypes.is_image_name("scan.DCM") and filetypes.is_image_name("x.dicom")


def test_monochrome1_is_inverted_to_monochrome2_polarity(tmp_path):
    grey = np.arange(40 * 40).reshape(40, 40) % 256
    m2 = _pixels(dicom_files.write(tmp_path / "m2.dcm", grey))
    m1 = _pixels(dicom_files.write(tmp_path / "m1.dcm", 255 - grey, kind="MONOCHROME1"))
    assert m2.shape == (40, 40, 3) and m2.dtype == np.uint8
    assert np.array_equal(m1, m2) and np.array_equal(m2[..., 0], grey)


def test_bit_depth_scales_by_its_range_not_by_the_image_peak(tmp_path):
    """12-bit data in 16-bit words: 4095 is white, and a dark image stays dark."""
    stored = np.full((16, 16), 1024, np.uint16)
    stored[0, 0] = 4095
    out = _pixels(dicom_files.write(tmp_path / "12bit.dcm", stored, bits=12))
    assert out[0, 0, 0] == 255 and out[1, 1, 0] == round(1024 * 255 / 4095)
    dark = _pixels(dicom_files.write(tmp_path / "dark.dcm", np.full((16, 16), 100, np.uint16), bits=12))
    assert dark[0, 0, 0] == round(100 * 255 / 4095)


def test_rescale_then_window_maps_the_window_onto_0_255(tmp_path):
    """CT: stored + intercept -1024 = HU; a window of centre 40, width 400 (soft tissue) shows
    -160..240 HU; below is black, above white, pydicom's linear window in between."""
    hu = np.array([[-1000, -160, 40, 240, 1000, 0, 0, 0]] * 8)
    path = dicom_files.write(tmp_path / "ct.dcm", hu + 1024, bits=12, RescaleSlope=1, RescaleIntercept=-1024,
                             WindowCenter=40, WindowWidth=400)
    row = _pixels(path)[0, :5, 0]
    assert row[0] == 0 and row[1] <= 1 and abs(int(row[2]) - 128) <= 1 and row[3] >= 254 and row[4] == 255


def test_signed_rescaled_without_window_uses_the_rescaled_bit_range(tmp_path):
    values = np.array([[-2048, 0, 2047] + [0] * 13] * 16)
    row = _pixels(dicom_files.write(tmp_path / "s.dcm", values, bits=12, signed=True, RescaleSlope=2,
                                    RescaleIntercept=10))[0, :3, 0]
    assert list(row) == [0, 128, 255]


def test_rgb_and_jpeg_compressed_dicom(tmp_path):
    grey = (np.arange(32 * 32).reshape(32, 32) % 200 + 20).astype(np.uint8)
    rgb = np.stack([grey, 255 - grey, grey // 2], -1)
    assert np.array_equal(_pixels(dicom_files.write(tmp_path / "rgb.dcm", rgb, kind="RGB")), rgb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom notes the JFIF marker of PIL's JPEG bytes
        decoded = _pixels(dicom_files.write_jpeg_compressed(tmp_path / "jpeg.dcm", grey))
    assert np.abs(decoded[..., 0].astype(int) - grey).max() <= 3  # JPEG quality 95


def test_multi_frame_and_pixelless_files_are_bad_images_with_their_reason(tmp_path):
    multi = dicom_files.write(tmp_path / "cine.dcm", np.zeros((16, 16)), frames=4)
    with pytest.raises(images.BadImage, match=r"multi-frame DICOM \(4 frames\)"):
        images.check_bytes(images.read_bytes(str(multi)))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(images.BadImage, match="DICOM"):
        images.check_bytes(images.read_bytes(str(broken)))


def _lesion_tree(root: Path) -> Path:
    """Two classes, each file stored one of the ways scanners do; one multi-frame file."""
    for i in range(24):
        label = "bright" if i % 2 else "dark"
        img = dicom_files.lesion(24, seed=i, bright=label == "bright")
        path = root / label / f"img{i:02d}.dcm"
        way = i % 4
        if way == 0:
            dicom_files.write(path, np.round(img * 255))
        elif way == 1:
            dicom_files.write(path, np.round((1 - img) * 255), kind="MONOCHROME1")
        elif way == 2:
            dicom_files.write(path, np.round(img * 4095), bits=12)
        else:
            dicom_files.write(path, np.round(img * 2000) - 1024 + 1024, bits=12, RescaleSlope=1,
                              RescaleIntercept=-1024, WindowCenter=-24, WindowWidth=2000)
    dicom_files.write(root / "bright" / "cine.dcm", np.zeros((24, 24)), frames=3)
    return root


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    data = _lesion_tree(root / "data")
    train(data, root / "run", RUN, report=False)  # figures are not under test here
    return root, data, root / "run"


def test_a_folder_of_mixed_dicom_trains_and_names_the_multi_frame_file(dicom_run):
    _, _, run = dicom_run
    skipped = json.loads((run / "data_skipped.json").read_text())
    text = json.dumps(skipped)
    assert "cine.dcm" in text and "multi-frame DICOM (3 frames)" in text
    assert (run / "metrics.json").exists()


def test_the_same_image_stored_both_ways_gets_the_same_prediction(dicom_run, tmp_path):
    _, _, run = dicom_run
    img = dicom_files.lesion(24, seed=99, bright=True)
    folder = tmp_path / "new"
    dicom_files.write(folder / "as_m2.dcm", np.round(img * 255))
    dicom_files.write(folder / "as_m1.dcm", 255 - np.round(img * 255), kind="MONOCHROME1")
    dicom_files.write(folder / "as_m1_16bit.dcm", 65535 - np.round(img * 255) * 257, kind="MONOCHROME1", bits=16)
    out = tmp_path / "p.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(folder), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"as_m2.dcm", "as_m1.dcm", "as_m1_16bit.dcm"}
    p = [float(rows[f]["p_bright"]) for f in ("as_m2.dcm", "as_m1.dcm", "as_m1_16bit.dcm")]
    assert p[0] == p[1] == pytest.approx(p[2], abs=1e-6)


def test_a_csv_of_dicom_files_and_the_fingerprint_read_them(dicom_run, tmp_path):
    from engine.options.config import parse_args
    from loaders.datasets import load_dataset
    _, data, _ = dicom_run
    files = sorted(data.rglob("img*.dcm"))
    table = data / "labels.csv"
    table.write_text("file,label\n" + "".join(f"{f.relative_to(data)},{f.parent.name}\n" for f in files))
    try:
        ds = load_dataset(parse_args(["--data", str(table), "--data.workers", "1"]).config.data)
    finally:
        table.unlink()
    assert len(ds.train) + len(ds.val) + len(ds.test) == len(files) and ds.native_size == 24
    sample, sides, modes = fingerprint_data._file_sample(ds.train.files)
    assert len(sample) == len(ds.train) and set(sides) == {24} and set(modes) == {"L"}


@pytest.mark.parametrize("backend", ["plain", "tensor", "baseline", "nvjpeg", "dali"])
def test_every_file_loader_decodes_dicom_on_the_cpu(dicom_run, backend):
    import importlib.util

    import torch

    from engine.options.config import parse_args
    from engine.options.resolve import loader_spec
    from loaders import base
    from loaders.datasets import load_dataset
    if backend == "dali" and importlib.util.find_spec("nvidia.dali") is None:
        pytest.skip("nvidia.dali not installed")
    _, data, _ = dicom_run
    cfg = parse_args(["--data", str(data), "--batch-size", "4", "--device", "cpu", "--data.workers", "1",
                      "--image-size", "16"]).config
    ds = load_dataset(cfg.data)
    loader = base.build_loader(backend, ds, "test", loader_spec(cfg), torch.device("cpu"), train=False)
    batches = list(loader)
    seen = sum(int((y >= 0).sum()) for _, y, *rest in batches)
    assert seen == len(ds.test) and all(torch.isfinite(x.float()).all() for x, *_ in batches)
