"""Pixels as a viewer shows them: EXIF orientation, float and deep images, JPEG trailers."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from loaders import images
from loaders.datasets import load_dataset

from . import broken


def _portrait() -> np.ndarray:
    """24 wide x 40 high, with a bright top-left corner: any turn or flip moves it."""
    arr = np.full((40, 24, 3), 30, np.uint8)
    arr[:10, :6] = (250, 40, 40)
    arr[30:, 18:] = (40, 40, 250)
    return arr


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_for_all_eight_values(orientation):
    data = broken.jpeg_oriented(_portrait(), orientation)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")).astype(int)
    got = images.decode(data, None).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2  # same pixels up to the JPEG decoders' rounding
    h, w = images.check_bytes(data)
    assert (h, w) == want.shape[:2]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_applies_to_other_formats_too(fmt):
    im = Image.fromarray(_portrait())
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    extra = {"WEBP": {"lossless": True}, "TIFF": {"tiffinfo": {0x0112: 6}}}.get(fmt, {"exif": exif.tobytes()})
    if fmt == "WEBP":
        extra["exif"] = exif.tobytes()
    im.save(buf, format=fmt, **extra)
    got = images.decode(buf.getvalue(), None)
    assert got.shape == (24, 40, 3) and np.array_equal(got, np.rot90(_portrait(), -1))


def test_rotated_phone_photo_trains_upright_in_a_dataset(tmp_path):
    root = broken.good_folder(tmp_path / "d", n=12, classes=("a", "b"))
    (root / "images" / "phone.jpg").write_bytes(broken.jpeg_oriented(_portrait(), 6))
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/phone.jpg,a\n")
    ds = load_dataset(broken.data_cfg(root))
    assert not ds.skipped and ds.native_size == 32


@pytest.mark.parametrize("values, mean, top", [
    (np.linspace(0.0, 1.0, 32 * 32), 127.5, 255),        # normalized [0, 1]: x 255
    (np.linspace(-1000.0, 3000.0, 32 * 32), 127.5, 255),  # CT Hounsfield units: min..max stretched
    (np.linspace(0.0, 0.5, 32 * 32), 63.75, 128),         # within [0, 1]: absolute scale kept, not stretched
])
def test_float_tiff_is_scaled_by_its_range_not_black(values, mean, top):
    out = images.decode(broken.float_tiff(values.reshape(32, 32)), None)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert abs(out.mean() - mean) < 1.0 and out.min() == 0 and out.max() == top


def test_float_tiff_with_nan_is_read():
    a = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    a[0, :4] = np.nan
    out = images.decode(broken.float_tiff(a), None)
    assert out[0, :4].max() == 0 and out.max() == 255


def test_12_bit_data_in_16_bit_tiff_is_scaled_by_its_peak():
    ramp = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="TIFF")
    out = images.decode(buf.getvalue(), None)
    assert out.min() == 0 and out.max() == 255 and 120 < out.mean() < 135


def test_jpeg_with_bytes_after_its_end_marker_is_accepted():
    data = broken.jpeg_with_trailer(5000)
    assert images.check_bytes(data) == (32, 32)
    assert images.check_bytes(data, full=True) == (32, 32)
    assert np.array_equal(images.decode(data, None), images.decode(broken.jpeg(), None))


def test_truncated_jpeg_is_still_refused_even_with_an_exif_thumbnail():
    """The thumbnail inside EXIF has its own end marker: it must not make a cut file look whole."""
    im = Image.fromarray(broken.rgb_array(64))
    thumb = io.BytesIO()
    im.resize((16, 16)).save(thumb, format="JPEG")
    exif = im.getexif()
    exif[0x0112] = 1
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes() + thumb.getvalue())
    data = buf.getvalue()
    assert b"\xff\xd9" in data[:len(data) // 2]
    for cut in (data[:len(data) // 2], data[:-200]):
        with pytest.raises(images.BadImage, match="truncated JPEG"):
            images.check_bytes(cut)
