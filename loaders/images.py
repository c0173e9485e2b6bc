"""Reading image files: a cheap validity check before training, and a robust decode.

JPEGs take the fast path (simplejpeg, libjpeg-turbo); anything else PIL can open (PNG,
16-bit, CMYK or grayscale JPEG) is converted to 8-bit RGB. Every failure is a `BadImage`
carrying a short human reason, so callers can report "path: reason" once and skip.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

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


def check_bytes(data: bytes, full: bool = False) -> tuple[int, int]:
    """(height, width) of a decodable image, or BadImage with the reason."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if is_jpeg and b"\xff\xd9" not in data[-64:]:
        raise BadImage("truncated JPEG (no end-of-image marker)")
    if is_jpeg and simplejpeg is not None and not full:
        try:
            h, w, _, colorspace = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise BadImage(f"unreadable JPEG header ({exc})") from None
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
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


def decode(data: bytes, size: int | None) -> np.ndarray:
    """HxWx3 uint8 RGB; resized (squashed) to size x size when size is given and differs."""
    arr = None
    if data[:3] == b"\xff\xd8\xff" and simplejpeg is not None:
        try:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            arr = None  # CMYK and a few exotic JPEGs: PIL handles them below
    if arr is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: scale to 8-bit, not clip
                    a = np.asarray(im, dtype=np.float32)
                    a = a * (255.0 / max(float(a.max()), 1.0))
                    im = Image.fromarray(a.astype(np.uint8))
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise BadImage(f"decode failed: {type(exc).__name__}: {exc}") from None
    if size is not None and arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    return arr


def read_bytes(path: str) -> bytes:
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
