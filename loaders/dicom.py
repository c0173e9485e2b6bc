"""DICOM files (.dcm) to the 8-bit RGB pixels every loader trains on, read with pydicom.

Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through pydicom's plug-ins
(pylibjpeg with libjpeg/openjpeg, installed by the `dicom` extra); a syntax no installed
plug-in decodes is a `BadImage` naming it. Decoding is on the CPU in every loader.

The rule, for monochrome images, in order:
1. the modality LUT (`Rescale Slope/Intercept`, or a Modality LUT Sequence) maps stored values
   to their physical unit (Hounsfield units in CT): pydicom's `apply_modality_lut`;
2. the first VOI transform when the file carries one (`Window Center/Width` or a VOI LUT
   Sequence): pydicom's `apply_voi_lut` - what a radiologist's viewer shows first;
3. to 8 bits by the range the data can take, not by each image's own min/max (that would
   brighten a dark image and darken a bright one): after a VOI LUT, 0..2^depth-1 of its
   descriptor; otherwise the stored range `Bits Stored` allows (signed by `Pixel
   Representation`), mapped through the rescale of step 1 - so 12-bit CT in 16-bit words uses
   its 12 bits, and a window maps exactly onto 0..255;
4. `MONOCHROME1` (0 = white) is inverted, so both polarities train as `MONOCHROME2`: the same
   film stored either way gives the same pixels.
Colour (`RGB`, `YBR_*` converted to RGB by pydicom, `PALETTE COLOR` through its LUT) is scaled
by its bit depth. Multi-frame files (cine, tomosynthesis, whole volumes) are not one image:
they are skipped with their reason, as are files without pixel data.
"""
from __future__ import annotations

import io

import numpy as np

PREAMBLE_MAGIC = b"DICM"  # bytes 128..131 of a DICOM Part 10 file


class DicomError(ValueError):
    """Why a DICOM file gives no image, in a user's words (turned into BadImage by loaders/images.py)."""


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == PREAMBLE_MAGIC


def _read(data: bytes, pixels: bool):
    import pydicom
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many types for a broken file
        raise DicomError(f"unreadable DICOM: {type(exc).__name__}") from None


def _check(ds, has_pixels: bool) -> tuple[int, int]:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames); one image per file is read: export one frame per file")
    if not has_pixels:
        raise DicomError("DICOM without pixel data")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    kind = str(getattr(ds, "PhotometricInterpretation", "")).strip()
    if kind not in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR") and not kind.startswith("YBR"):
        raise DicomError(f"unsupported DICOM photometric interpretation {kind or '(none)'}")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise DicomError(f"no installed decoder for DICOM transfer syntax {syntax.name} "
                             "(pip install -e .[dicom] adds pylibjpeg)")
    return rows, cols


def size(data: bytes) -> tuple[int, int]:
    """(height, width) of a single-frame DICOM image with pixel data a decoder reads, or DicomError."""
    ds = _read(data, pixels=True)
    return _check(ds, "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(getattr(ds, "BitsStored", getattr(ds, "BitsAllocated", 8)))
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _output_range(ds) -> tuple[float, float]:
    """The values steps 1-2 can produce, which step 3 maps onto 0..255."""
    if "VOILUTSequence" in ds:
        return 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds:
        lut = np.asarray(ds.ModalityLUTSequence[0].LUTData, np.float64)
        return float(lut.min()), float(lut.max())
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return ends[0], ends[1]


def _to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (np.asarray(arr, np.float64) - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _monochrome(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        values = apply_voi_lut(values, ds, index=0)
    grey = _to_uint8(values, *_output_range(ds))
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        grey = 255 - grey
    return np.repeat(grey[..., None], 3, axis=2)


def decode_dicom(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB by the rule in the module docstring, or DicomError."""
    ds = _read(data, pixels=True)
    _check(ds, "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds)
    try:
        arr = ds.pixel_array  # YBR is converted to RGB here (pydicom's default)
    except Exception as exc:
        raise DicomError(f"DICOM pixel data not decodable: {type(exc).__name__}: {exc}") from None
    kind = str(ds.PhotometricInterpretation).strip()
    if kind.startswith("MONOCHROME"):
        return np.ascontiguousarray(_monochrome(arr, ds))
    if kind == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        arr = apply_color_lut(arr, ds)
        depth = 16 if arr.dtype.itemsize > 1 else 8
        return np.ascontiguousarray(_to_uint8(arr, 0.0, 2.0 ** depth - 1))
    lo, hi = _stored_range(ds)
    return np.ascontiguousarray(_to_uint8(arr, lo, hi))
