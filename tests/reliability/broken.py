"""Generators of broken inputs for the reliability suite, and a CLI runner that checks the
"one clear line, no traceback" contract. Every input is made here, in a temp folder: the
suite needs no fixtures on disk and never touches the shared data.
"""
from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- image bytes

def rgb_array(size: int = 32, label: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((size, size, 3), 40 + 60 * (label % 4), np.uint8)
    return base + rng.integers(0, 30, (size, size, 3), dtype=np.uint8)


def jpeg(arr: np.ndarray | None = None, mode: str | None = None, quality: int = 90) -> bytes:
    im = Image.fromarray(rgb_array() if arr is None else arr)
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png16(size: int = 32) -> bytes:
    """A 16-bit grayscale PNG using the full 0..65535 range (a typical scanner export)."""
    ramp = np.linspace(0, 65535, size * size).reshape(size, size).astype(np.uint16)
    return png(ramp)


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 2]


def jpeg_claiming_size(height: int, width: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) claims another size: a decompression bomb."""
    data = bytearray(jpeg())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming_size(height: int, width: int) -> bytes:
    """A PNG header for a huge RGB image with almost no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- datasets on disk

def write_csv(path: Path, rows: list[list[str]], header=("file", "label", "group")) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def good_folder(root: Path, n: int = 30, classes=("a", "b", "c"), size: int = 32, groups: bool = False) -> Path:
    """`root/images/imNNN.jpg` + `root/labels.csv`, n images cycling through the classes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % len(classes)
        name = f"images/im{i:03d}.jpg"
        (root / name).write_bytes(jpeg(rgb_array(size, label, seed=i)))
        rows.append([name, classes[label]] + ([f"g{i // 2}"] if groups else []))
    write_csv(root / "labels.csv", rows, ("file", "label", "group") if groups else ("file", "label"))
    return root


def data_cfg(path, **overrides):
    from engine.options.config import DataConfig
    cfg = DataConfig(path=str(path), workers=2)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


# ----------------------------------------------------------------------------- the CLI

def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("WANDB_MODE", "disabled")
    env["MEDTRAIN_LOG"] = "WARNING"  # keep stderr to warnings and the error line
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny runs: one thread each, immune to a busy machine
    return env


def run_cli(args: list[str], module: str = "engine.train", timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def error_line(result: subprocess.CompletedProcess, status: int = 2) -> str:
    """Assert the contract for a refused run (exit status, no traceback, one `error:` line) and
    return that line."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def fast_run_args(data, out, report: bool = False) -> list[str]:
    """A seconds-long CPU run: tiny pixel MLP, one worker, no tracking, no progress bar, no plan
    (these tests pin a recipe; the plan would calibrate and choose its own, engine/plan/plan.py),
    and no report/ figures unless `report` (they cost more than the run; the tests that read them ask)."""
    return ["--data", str(data), "--out", str(out), "--model", "mlp", "--image-size", "16", "--batch-size", "8",
            "--epochs", "1", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
            "--data.workers", "1", "--train.log_interval", "2", "--run.plan", "off", "--run.report", str(report).lower()]


# ----------------------------------------------------------------------------- pixels as a viewer shows them

def jpeg_oriented(arr: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A JPEG storing `arr` as the sensor saw it, with an EXIF orientation tag (phones do this)."""
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def jpeg_with_trailer(size: int = 2000) -> bytes:
    """A complete JPEG followed by vendor bytes after its end marker (phone makers append these)."""
    return jpeg() + b"\x00VENDOR-TRAILER" + bytes(range(256)) * (size // 256)


def float_tiff(arr: np.ndarray) -> bytes:
    """A 32-bit float single-channel TIFF (microscopy and research exports)."""
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


def image_bytes(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()
