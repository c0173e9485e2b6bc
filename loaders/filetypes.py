"""Which files are images, and which entries are system clutter.

One rule for trees and CSVs alike: a file whose extension (any case) names an image type the
decoder reads is an image; anything else found in a class folder is reported as skipped
with its reason. Hidden and system entries are not data and are ignored at every depth:
names starting with `.` (`.DS_Store`, `.thumbnails/`, AppleDouble `._x.jpg`) or `@` (Synology
`@eaDir/`), `__MACOSX/` (zip debris), `Thumbs.db`, `desktop.ini`.
"""
from __future__ import annotations

from importlib.util import find_spec

from PIL import Image, features

# Types PIL decodes to pixels here (plugins that only write, or only wrap other data, are out).
_CANDIDATES = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".apng": "PNG",
    ".bmp": "BMP", ".dib": "DIB", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF",
    ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM", ".pnm": "PPM", ".tga": "TGA",
    ".jp2": "JPEG2000", ".j2k": "JPEG2000", ".jpx": "JPEG2000",
}
_NEEDS = {"WEBP": "webp", "JPEG2000": "jpg_2000"}
Image.init()  # registers every plugin, so Image.OPEN lists what this PIL build reads
IMAGE_EXTENSIONS = tuple(ext for ext, fmt in _CANDIDATES.items()
                         if fmt in Image.OPEN and (fmt not in _NEEDS or features.check(_NEEDS[fmt])))
# DICOM is read by pydicom (loaders/dicom.py), not PIL: an image type whenever pydicom is installed.
# Found, not imported: importing it (and its pixel handlers) costs a quarter second in every process.
if find_spec("pydicom") is not None:
    IMAGE_EXTENSIONS += (".dcm", ".dicom")
SYSTEM_NAMES = {"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "system volume information"}
# Formats a medical user may drop in that need a conversion the engine does not do.
_CONVERT_HINTS = {".dcm": "DICOM: pip install -e .[dicom]", ".dicom": "DICOM: pip install -e .[dicom]", ".nii": "NIfTI", ".gz": "compressed", ".heic": "HEIC",
                  ".svs": "whole-slide", ".ndpi": "whole-slide", ".raw": "camera raw", ".dng": "camera raw"}


def is_hidden(name: str) -> bool:
    return name.startswith((".", "@")) or name.lower() in SYSTEM_NAMES


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def needs_conversion(name: str) -> str | None:
    """The reason a file of a type that needs converting (DICOM, NIfTI, ...) is not used, else None:
    the same words whether a tree holds it or a CSV lists it."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    return not_image_reason(name) if ext in _CONVERT_HINTS and ext not in IMAGE_EXTENSIONS else None


def not_image_reason(name: str) -> str:
    """Why a file in a class folder is not used, in words a user can act on."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    if not ext:
        return "not an image file (no extension)"
    if ext in _CONVERT_HINTS:
        return f"not an image type the decoder reads ({ext}: {_CONVERT_HINTS[ext]}; convert to PNG or JPEG)"
    return f"not an image type the decoder reads ({ext})"
