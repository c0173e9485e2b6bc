"""The file a CSV cell names, found the way the person who wrote the CSV meant it.

In order: the path as written (relative to the data folder); the same with Windows `\\`
separators and a leading `./` dropped; the path compared in Unicode NFC (a CSV typed on one
system names `é` precomposed, the disk of another stores it decomposed, or the reverse);
then, when the path is not there, the one file of that name anywhere in the data folder (in any
case: `IMG_1.JPG` listed for `IMG_1.jpg`)
(Kaggle layouts keep images in `train_images/` beside `train.csv`), and for a bare id
without extension (`ISIC_0024306`, `image_id` columns) the one image with that stem. Two
candidates are ambiguous and reported, never guessed. A path outside the data folder
(absolute, `..`, a symlink leading out) is refused: a CSV must not make us read other files.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from common.errors import ConfigError
from loaders import filetypes


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class FileFinder:
    def __init__(self, root: Path):
        self.root = root
        self.real_root = root.resolve()
        self._index: tuple[dict, dict, dict, dict] | None = None

    def find(self, cell: str, csv_path: Path, line: int) -> tuple[Path | None, str]:
        """(absolute path, "") or (None, reason it was not found)."""
        name = _nfc(cell.strip())
        if os.path.isabs(name) or re.match(r"^[A-Za-z]:[\\/]", name):
            raise ConfigError(f"{csv_path}:{line}: absolute path {cell.strip()!r} not allowed; "
                              f"paths are relative to {self.root}")
        rel = name.replace("\\", "/") if not (self.root / name).exists() else name
        while rel.startswith("./"):
            rel = rel[2:]
        for candidate in (name, rel, unicodedata.normalize("NFD", rel)):
            path = self.root / candidate
            if path.exists() or path.is_symlink():
                return self._inside(path, cell, csv_path, line), ""
        by_rel, by_name, by_stem, by_lower = self._files()
        if _nfc(rel) in by_rel:
            return self._inside(by_rel[_nfc(rel)], cell, csv_path, line), ""
        base = rel.rsplit("/", 1)[-1]
        hits = by_name.get(base, [])
        if not hits:  # `IMG_1.JPG` listed for `IMG_1.jpg`: cameras and Windows write the case either way
            hits = by_lower.get(base.lower(), [])
        if not hits and not filetypes.is_image_name(base):
            hits = by_stem.get(base, [])
        if len(hits) == 1:
            return self._inside(hits[0], cell, csv_path, line), ""
        if len(hits) > 1:
            shown = ", ".join(str(h.relative_to(self.root)) for h in hits[:3])
            return None, f"ambiguous: {len(hits)} files match {cell.strip()!r} ({shown})"
        if any(part == ".." for part in rel.split("/")):
            self._inside(self.root / rel, cell, csv_path, line)  # refuses a path that leaves the folder
        return None, "listed in the CSV but missing"

    def _inside(self, path: Path, cell: str, csv_path: Path, line: int) -> Path:
        full = path.resolve()
        if not full.is_relative_to(self.real_root):
            raise ConfigError(f"{csv_path}:{line}: path {cell.strip()!r} escapes the data folder {self.root}")
        return full

    def _files(self) -> tuple[dict, dict, dict, dict]:
        """Every non-hidden file under the root: by NFC relative path, by name, by image stem, by lower-case name."""
        if self._index is None:
            by_rel, by_name, by_stem, by_lower = {}, {}, {}, {}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not filetypes.is_hidden(d))
                for f in sorted(files):
                    if filetypes.is_hidden(f):
                        continue
                    path = Path(folder) / f
                    key = _nfc(f)
                    by_rel[_nfc(str(path.relative_to(self.root)))] = path
                    by_name.setdefault(key, []).append(path)
                    by_lower.setdefault(key.lower(), []).append(path)
                    if filetypes.is_image_name(key):
                        by_stem.setdefault(key.rsplit(".", 1)[0], []).append(path)
            self._index = by_rel, by_name, by_stem, by_lower
        return self._index
