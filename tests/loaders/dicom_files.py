"""Small DICOM files written with pydicom for the tests: what scanners export, a few pixels big."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write(path: Path, pixels: np.ndarray, kind: str = "MONOCHROME2", bits: int = 8, signed: bool = False,
          frames: int = 1, **tags) -> Path:
    """A Part-10 file (explicit VR little endian) holding `pixels` (HxW, or HxWx3 for RGB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = kind
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in tags.items():
        setattr(ds, key, value)
    dtype = (np.int16 if signed else np.uint16) if bits > 8 else np.uint8
    ds.PixelData = np.concatenate([pixels.astype(dtype)] * frames).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg_compressed(path: Path, pixels: np.ndarray) -> Path:
    """A JPEG Baseline DICOM: pydicom has no JPEG encoder, so PIL's JPEG bytes are encapsulated
    the way a modality does it (one fragment per frame); pylibjpeg decodes it back."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    write(path, pixels)
    import pydicom
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def lesion(side: int, seed: int, bright: bool) -> np.ndarray:
    """HxW float 0..1: a blob on texture; `bright` puts it above the background, else below."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    cy, cx = rng.uniform(0.35, 0.65, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.03)
    base = 0.5 + 0.08 * rng.standard_normal((side, side))
    return np.clip(base + (0.4 if bright else -0.4) * blob, 0, 1)
