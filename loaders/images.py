"""Reading image files: a cheap validity check before training, and a robust decode.

JPEGs take the fast path (simplejpeg, libjpeg-turbo); anything else PIL can open (PNG,
16-bit, CMYK or grayscale JPEG) is converted to 8-bit RGB. Every failure is a `BadImage`
carrying a short human reason, so callers can report "path: reason" once and skip.

Pixels are what an image viewer shows:
- EXIF orientation is applied (a portrait phone photo stays portrait), by `orient`, the one
  function every backend calls on its decoded pixels (array or tensor), so all agree exactly;
- integer images deeper than 8 bits (16-bit PNG/TIFF, 32-bit integer TIFF) are scaled by
  their own peak, x 255 / max: 10- and 12-bit data in 16-bit containers is the rule in
  medical exports, and scaling by 65535 would make it near black;
- float images (32-bit TIFF): values within [0, 1] are the conventional normalized range and
  are scaled x 255; any other range is stretched from its min..max to 0..255; NaN is 0;
- a JPEG is complete when its end-of-image marker follows the scan data: bytes after it (phone
  and vendor trailers, appended previews) are ignored, as every decoder does; a file whose
  scan data never ends is truncated and reported.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from loaders import dicom, hdf5_store

try:
    import simplejpeg
except ImportError:  # PIL alone still works, only slower
    simplejpeg = None

MAX_PIXELS = 100_000_000  # refuse decompression bombs before allocating them
MIN_SIDE = 8  # smaller is a thumbnail or a broken export: upscaled it would train on noise


class BadImage(ValueError):
    pass


def _describe_start(data: bytes) -> str:
    head = data[:8]
    if head.startswith(b"\x89PNG"):
        return "PNG"
    return repr(head[:6])


# EXIF orientation -> array operations in order: T transpose, H flip rows, W flip columns
# (checked against PIL's ImageOps.exif_transpose for all eight values in the tests).
_ORIENT_OPS = {2: "W", 3: "HW", 4: "H", 5: "T", 6: "TW", 7: "THW", 8: "TH"}
EXIF_ORIENTATION = 0x0112


def orient(pixels, orientation: int, h_axis: int = 0):
    """`pixels` (numpy HWC or a torch tensor with H at `h_axis`, W after it) as the viewer shows it."""
    w_axis = h_axis + 1
    for op in _ORIENT_OPS.get(orientation, ""):
        if isinstance(pixels, np.ndarray):
            pixels = pixels.swapaxes(h_axis, w_axis) if op == "T" else np.flip(pixels, h_axis if op == "H" else w_axis)
        else:  # torch: works on any device, so GPU decoders orient in place of the decode
            import torch
            pixels = pixels.transpose(h_axis, w_axis) if op == "T" else torch.flip(pixels, (h_axis if op == "H" else w_axis,))
    return pixels


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1 when absent); PIL parses only when an EXIF block exists."""
    if b"Exif\x00\x00" not in data[:65536]:
        return 1
    try:
        with Image.open(io.BytesIO(data)) as im:
            return pil_orientation(im)
    except Exception:  # a broken EXIF block does not make the pixels unreadable
        return 1


def pil_orientation(im: Image.Image) -> int:
    """EXIF orientation of an opened image; 1 when absent or unreadable (PNG keeps EXIF after the
    pixels, so a file cut short there has none: the pixel check reports it, not this)."""
    if im.format == "TIFF":  # Pillow's TIFF reader orients the pixels itself (size already swapped)
        return 1
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if value in _ORIENT_OPS else 1


def jpeg_complete(data: bytes) -> bool:
    """True when the end-of-image marker follows the scan data (trailing bytes allowed).

    The segments before the scan are skipped by their lengths (an EXIF thumbnail holds its own
    end marker); inside scan data 0xFF is always stuffed or a restart marker, so the first
    FFD9 after the scan header is the image's end."""
    if b"\xff\xd9" in data[-64:]:
        return True
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:
            return data.find(b"\xff\xd9", i + 2 + length) != -1
        i += 2 + length
    return False


def check_bytes(data: bytes, full: bool = False) -> tuple[int, int]:
    """(height, width) of a decodable image as shown (EXIF orientation applied), or BadImage."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    if dicom.is_dicom(data):
        return _check_dicom(data, full)
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if is_jpeg and not jpeg_complete(data):
        raise BadImage("truncated JPEG (no end-of-image marker)")
    if is_jpeg and simplejpeg is not None and not full:
        try:
            h, w, _, colorspace = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise BadImage(f"unreadable JPEG header ({exc})") from None
        if jpeg_orientation(data) >= 5:  # 5..8 turn the image a quarter: height and width swap
            h, w = w, h
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if pil_orientation(im) >= 5:
                    h, w = w, h
                if full:
                    im.load()
        except Image.DecompressionBombError as exc:
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            raise BadImage(f"image too large ({pixels.group(1) + ' pixels; ' if pixels else ''}decompression bomb guard)") from None
        except Exception as exc:  # PIL raises many types; all mean "not an image we can read"
            kind = "JPEG" if is_jpeg else f"image (file starts with {_describe_start(data)})"
            raise BadImage(f"not a readable {kind}: {type(exc).__name__}") from None
    if h < 1 or w < 1:
        raise BadImage(f"invalid size {w}x{h}")
    if h * w > MAX_PIXELS:
        raise BadImage(f"image too large ({h * w} pixels, {w}x{h})")
    if min(h, w) < MIN_SIDE:
        raise BadImage(f"image too small ({w}x{h} pixels; at least {MIN_SIDE} per side)")
    if full:
        decode(data, None)
    return h, w


def _check_dicom(data: bytes, full: bool) -> tuple[int, int]:
    try:
        h, w = dicom.size(data)
        if full:
            dicom.decode_dicom(data)
    except dicom.DicomError as exc:
        raise BadImage(str(exc)) from None
    if h * w > MAX_PIXELS or min(h, w) < MIN_SIDE:
        raise BadImage(f"DICOM image of {w}x{h} pixels (between {MIN_SIDE} per side and {MAX_PIXELS} in all)")
    return h, w


def to_8bit(im: Image.Image) -> Image.Image:
    """Deeper-than-8-bit and float images scaled to 0..255 by the rule in the module docstring."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a * (255.0 / max(float(a.max()), 1.0))
    elif im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        else:
            a = a * 255.0
    else:
        return im
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def decode(data: bytes, size: int | None) -> np.ndarray:
    """HxWx3 uint8 RGB as shown; resized (squashed) to size x size when size is given and differs."""
    arr = None
    if dicom.is_dicom(data):  # CPU decode in every loader (loaders/dicom.py has the rule)
        try:
            arr = dicom.decode_dicom(data)
        except dicom.DicomError as exc:
            raise BadImage(str(exc)) from None
    elif data[:3] == b"\xff\xd8\xff" and simplejpeg is not None:
        try:
            arr = orient(simplejpeg.decode_jpeg(data, colorspace="RGB"), jpeg_orientation(data))
        except ValueError:
            arr = None  # CMYK and a few exotic JPEGs: PIL handles them below
    if arr is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                orientation = pil_orientation(im)
                arr = orient(np.asarray(to_8bit(im).convert("RGB")), orientation)
        except Exception as exc:
            raise BadImage(f"decode failed: {type(exc).__name__}: {exc}") from None
    if size is not None and arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(arr)


def read_bytes(path: str) -> bytes:
    """A file's bytes, or an HDF5 store member's (`store.hdf5::key`, loaders/hdf5_store.py)."""
    if hdf5_store.is_member(path):
        try:
            return hdf5_store.read_member(path)
        except hdf5_store.MemberError as exc:
            raise BadImage(str(exc)) from None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadImage(f"cannot read file ({exc.strerror})") from None


def scan(files: list[str], full: bool = False, workers: int = 4) -> tuple[list[int], list[tuple[str, str]], tuple[int, int] | None]:
    """Check every file: (indices of good files, [(path, reason)] of bad ones, most common size).

    The most common (height, width), not the first file's: one odd file listed first must not
    set the decode size of the whole dataset."""
    def check(path):
        try:
            return check_bytes(read_bytes(path), full), None
        except BadImage as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(check, files, chunksize=64))
    good = [i for i, (hw, _) in enumerate(results) if hw is not None]
    bad = [(files[i], reason) for i, (hw, reason) in enumerate(results) if hw is None]
    common = Counter(results[i][0] for i in good).most_common(1)[0][0] if good else None
    return good, bad, common
