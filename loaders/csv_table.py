"""Reading a label CSV: its text, its columns by meaning, and its rows.

Columns are used for what their header names, never for where they stand:
- file: `file`, `filename`, `image`, `image_id`, `path`, `id_code`, ... (FILE_COLUMNS);
- label: `label`, `class`, `dx`, `target`, `diagnosis`, ... (LABEL_COLUMNS); without one, two
  or more 0/1 columns are read as one-hot (ISIC `image,MEL,NV,...`): the column holding the
  one 1 is the label, and a row with no 1 or several is skipped with its reason;
- group: `group`, `patient_id`, `lesion_id`, `subject`, ... (GROUP_COLUMNS): images of one group
  never straddle train/val/test;
- split: `split`, `fold`, `partition`, `subset`, `set` holding train/val/test (or training, valid,
  validation, dev, testing): the predefined partition, used as given;
- anything else (`age`, `sex`, a pandas index `Unnamed: 0` or empty header): metadata, never
  used for splitting.
A CSV without a header row (its first cell names an existing file) is read by position as
file,label and nothing else. The delimiter is detected (`,` `;` tab `|`: Excel in much of
Europe writes `;`), a UTF-8 byte-order mark is dropped, UTF-16 (Excel "Unicode text") is read,
Windows and old-Mac line endings and quoted fields are handled.
"""
from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from loaders import column_guess, filetypes
from loaders import labels as label_rules
from loaders import multilabel
from loaders.file_finder import FileFinder

log = logging.getLogger("medtrain.data")

FILE_COLUMNS = ("file", "filename", "file_name", "filepath", "file_path", "path", "image", "image_id",
                "image_name", "image_path", "imagename", "image_file", "img", "img_id", "img_name", "img_path",
                "image_index", "id_code", "fname", "name", "id", "isic_id")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "dx", "target", "diagnosis", "category",
                 "level", "finding", "finding_labels", "y")
GROUP_COLUMNS = ("group", "group_id", "patient_id", "patientid", "patient", "patient_name", "subject",
                 "subject_id", "participant", "participant_id", "case", "case_id", "lesion_id", "lesion")
SPLIT_COLUMNS = ("split", "fold", "partition", "subset", "set", "data_split", "dataset_split")
SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test", "testing": "test"}
SPLIT_SPELLINGS = "train, val or test (also training, valid, validation, dev, testing)"
HEADER_HINT = "a header file,label[,group][,split] or one-hot class columns"
_ONE_HOT = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
_DELIMITERS = (",", ";", "\t", "|")


def header_key(cell: str) -> str:
    """'Patient ID' -> 'patient_id': how a header cell is compared with the names above."""
    return re.sub(r"[\s\-]+", "_", label_rules.clean_text(cell).lower())


def _is_index_column(cell: str) -> bool:
    return not cell.strip() or re.fullmatch(r"unnamed: ?\d+", cell.strip().lower()) is not None


# ----------------------------------------------------------------------------- text

def read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")  # -sig: Excel's byte-order mark is not a column name
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a readable CSV (contains NUL bytes: a binary file?)")
    return text


def _parse(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return [(reader.line_num, row) for row in reader]


def _delimiter(text: str) -> str:
    """The candidate that splits the first lines into the most consistent width above 1."""
    sample = "\n".join(text.splitlines()[:50])
    best, best_score = ",", (0.0, 0)
    for d in _DELIMITERS:
        try:
            widths = [len(r) for _, r in _parse(sample, d) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if not widths:
            continue
        width, count = Counter(widths).most_common(1)[0]
        score = (count / len(widths), width) if width > 1 else (0.0, 0)
        if score > best_score:
            best, best_score = d, score
    return best


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row; any unreadable CSV is one clear error."""
    text = read_text(path)
    try:
        return _parse(text, _delimiter(text))
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None


# ----------------------------------------------------------------------------- columns

@dataclass
class Columns:
    file: int
    label: int | None = None
    group: int | None = None
    split: int | None = None
    one_hot: dict[int, str] = field(default_factory=dict)   # column -> class name
    multilabel: bool = False                                 # findings (loaders/multilabel.py), not one class
    ignored: list[str] = field(default_factory=list)


def _named(keys: list[str], names: tuple[str, ...]) -> list[int]:
    return sorted((i for i, k in enumerate(keys) if k in names), key=lambda i: names.index(keys[i]))


def _split_column(path: Path, header: list[str], body, candidates: list[int]) -> int | None:
    for col in candidates:
        values = {label_rules.clean_text(r[col]).lower() for _, r in body
                  if col < len(r) and not label_rules.is_missing(r[col])}
        known = {v for v in values if v in SPLIT_VALUES}
        if known and known != values:
            odd = sorted(values - known)[0]
            line = next(n for n, r in body if col < len(r) and label_rules.clean_text(r[col]).lower() == odd)
            raise ConfigError(f"{path}:{line}: split column {header[col].strip()!r} has value {odd!r}; "
                              f"expected {SPLIT_SPELLINGS}")
        if known:
            return col
        log.warning("%s: column %r holds %s, not train/val/test: ignored for splitting", path.name,
                    header[col].strip(), ", ".join(sorted(values)[:4]) or "nothing")
    return None


def _one_hot_columns(header: list[str], body, free: list[int]) -> dict[int, str]:
    cols = [c for c in free if all(c < len(r) and r[c].strip() in _ONE_HOT for _, r in body if any(r))]
    return {c: label_rules.normalize(header[c]) for c in cols} if len(cols) >= 2 else {}


def detect_columns(path: Path, header: list[str], body, need_labels: bool = True, finder=None) -> Columns:
    keys = [header_key(h) for h in header]
    files = _named(keys, FILE_COLUMNS)
    if not files and finder is not None:  # no header names it: the column whose cells name files here
        files = [c for c in [column_guess.file_column(header, body, finder, path)] if c is not None]
        if files:
            log.warning("%s: file column %r chosen by content (its cells name files of the folder)", path.name,
                        header[files[0]].strip())
    if not files:
        raise ConfigError(f"{path}: no file column; expected {HEADER_HINT} (found header "
                          f"{','.join(h.strip() for h in header)!r}; file columns: {', '.join(FILE_COLUMNS[:8])}, ...)")
    cols = Columns(file=files[0])
    label_cols = [c for c in _named(keys, LABEL_COLUMNS) if c != cols.file]
    group_cols = _named(keys, GROUP_COLUMNS)
    cols.label = label_cols[0] if label_cols else None
    cols.group = group_cols[0] if group_cols else None
    cols.split = _split_column(path, header, body, _named(keys, SPLIT_COLUMNS))
    used = {cols.file, cols.label, cols.group, cols.split} - {None}
    free = [i for i in range(len(header)) if i not in used and not _is_index_column(header[i])
            and keys[i] not in FILE_COLUMNS + LABEL_COLUMNS + GROUP_COLUMNS + SPLIT_COLUMNS]
    if cols.label is None:
        cols.one_hot = _one_hot_columns(header, body, free)
    if cols.label is None and not cols.one_hot and need_labels:
        cols.label = _label_by_content(path, header, body, [c for c in free if c != cols.file])
    cols.multilabel = _multilabel(path, header, body, cols, free)
    used |= set(cols.one_hot) | ({cols.label} - {None})
    cols.ignored = [header[i].strip() for i in range(len(header)) if i not in used and not _is_index_column(header[i])]
    extra_labels = [header[c].strip() for c in label_cols[1:]]
    if extra_labels:
        log.warning("%s: label column %r used; %s also look like labels and are ignored", path.name,
                    header[cols.label].strip(), ", ".join(repr(x) for x in extra_labels))
    if len(group_cols) > 1:
        log.warning("%s: images grouped by %r; %s ignored", path.name, header[cols.group].strip(),
                    ", ".join(repr(header[c].strip()) for c in group_cols[1:]))
    return cols


def _label_by_content(path: Path, header: list[str], body, free: list[int]) -> int:
    """The label column no header names, by what it holds (loaders/column_guess.py), or one line
    naming the CSV, its header and the columns that could be the label."""
    col, candidates = column_guess.label_column(header, body, free)
    shown = ",".join(h.strip() for h in header)
    if col is not None:
        log.warning("%s: label column %r chosen by content (%d distinct values)", path.name, header[col].strip(),
                    len(column_guess.distinct_values(column_guess.sample(body), col)))
        return col
    if candidates:
        names = ", ".join(repr(header[c].strip()) for c in candidates[:8])
        raise ConfigError(f"{path}: no column is named as the label, and several could be ({names}); rename the one "
                          f"holding the diagnosis to 'label' (found header {shown!r})")
    raise ConfigError(f"{path}: no label column; expected {HEADER_HINT} (found header "
                      f"{shown!r}; label columns: {', '.join(LABEL_COLUMNS[:8])}, ...)")


def _multilabel(path: Path, header: list[str], body, cols: Columns, free: list[int]) -> bool:
    """Several findings per image: multi-hot 0/1 columns or a `|`-separated label column."""
    if cols.one_hot:
        several = multilabel.multi_hot_rows(body, list(cols.one_hot), _ONE_HOT)
        if several and several * 100 < len(body):  # a one-hot file with a few bad rows looks the same: say so
            log.warning("%s: %d of %d rows have several 1s, so the 0/1 columns are read as multi-label findings; "
                        "if each image has one class (one-hot), fix those rows", path.name, several, len(body))
        return several > 0
    if cols.label is None or not multilabel.has_separated_cells(body, cols.label):
        return False
    hot = list(_one_hot_columns(header, body, free))
    if hot and multilabel.multi_hot_rows(body, hot, _ONE_HOT):
        multilabel.refuse_ambiguous(path, header, cols.label, hot)
    return True


def describe_columns(header: list[str], cols: Columns) -> str:
    parts = [f"file {header[cols.file].strip()!r}"]
    if cols.label is not None:
        parts.append(f"label {header[cols.label].strip()!r}")
    if cols.one_hot:
        kind = "multi-label findings (0/1 columns)" if cols.multilabel else "one-hot labels"
        parts.append(f"{kind} {', '.join(cols.one_hot.values())}")
    elif cols.multilabel:
        parts.append(f"'{multilabel.SEPARATOR}'-separated findings")
    for kind in ("group", "split"):
        col = getattr(cols, kind)
        if col is not None:
            parts.append(f"{kind} {header[col].strip()!r}")
    if cols.ignored:
        parts.append(f"not used for splitting: {', '.join(cols.ignored)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- rows

@dataclass
class Listing:
    """What a label source says: one entry per usable image, plus what was skipped and why."""
    files: list[str]
    labels: list[str]
    groups: list[str] | None = None
    parts: list[str] | None = None            # predefined split per image: train|val|test
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""                           # where the labels came from, in words, for the log
    findings: list[str] | None = None          # multi-label: the finding names; labels are tuples of them


def _known_header(cells: list[str]) -> bool:
    names = FILE_COLUMNS + LABEL_COLUMNS + GROUP_COLUMNS + SPLIT_COLUMNS
    return any(header_key(c) in names for c in cells)


def _label_of(row: list[str], cols: Columns) -> tuple[str, str]:
    """(label, "") or ("", reason the row has none); multi-label: (tuple of findings, "")."""
    if cols.multilabel:
        return _findings_of(row, cols)
    if cols.one_hot:
        hot = [name for c, name in cols.one_hot.items() if c < len(row) and _ONE_HOT.get(row[c].strip()) == 1]
        if len(hot) != 1:
            shown = f" ({', '.join(hot)})" if hot else ""
            return "", f"one-hot row has {len(hot)} positives{shown}; expected exactly one"
        return hot[0], ""
    if cols.label is None:  # reading files only (prediction): no label wanted
        return "", ""
    raw = row[cols.label]
    if not raw.strip():
        return "", "empty label"
    if label_rules.is_missing(raw):
        return "", f"missing label ({raw.strip()!r})"
    return label_rules.normalize(raw), ""


def _findings_of(row: list[str], cols: Columns) -> tuple[tuple[str, ...], str]:
    if cols.one_hot:  # all 0s: no finding, a valid row
        return tuple(name for c, name in cols.one_hot.items() if c < len(row) and _ONE_HOT.get(row[c].strip()) == 1), ""
    raw = row[cols.label]
    if not raw.strip():
        return (), "empty label"
    if raw.strip().lower() not in multilabel.NO_FINDING and label_rules.is_missing(raw):
        return (), f"missing label ({raw.strip()!r})"
    return multilabel.separated_findings(raw), ""


def read_listing(root: Path, csv_path: Path, need_labels: bool = True, finder=None) -> Listing:
    """`finder`: what a file cell names (default files under `root`; an HDF5 store's keys: loaders/hdf5_store.py)."""
    rows = read_rows(csv_path)
    if not rows:
        raise ConfigError(f"{csv_path}: empty CSV; expected a header file,label[,group]")
    finder = finder or FileFinder(root)
    (_, header), body = rows[0], rows[1:]
    if not _known_header(header) and header and header[0].strip() and finder.find(header[0], csv_path, 1)[0]:
        # The first row is data: reading it as a header would silently drop one image.
        log.warning("%s has no header row: columns taken by position (file, label)%s", csv_path.name,
                    f"; columns 3..{len(header)} ignored" if len(header) > 2 else "")
        if len(header) < 2 and need_labels:
            raise ConfigError(f"{csv_path}: no header row and one column; expected file,label")
        header, body = ["file", "label"][:len(header)] + [""] * (len(header) - 2), rows
    cols = detect_columns(csv_path, header, body, need_labels, finder)
    listing = Listing([], [], [] if cols.group is not None else None, [] if cols.split is not None else None,
                      source=f"{csv_path.name}: {describe_columns(header, cols)}")
    width = max(c for c in (cols.file, cols.label, cols.split) if c is not None) + 1
    seen: dict[str, tuple[int, str]] = {}
    for line, row in body:
        where = f"{csv_path}:{line}"
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < width:
            listing.skipped.append((where, f"row has {len(row)} columns; expected at least {width}"))
            continue
        label, why = _label_of(row, cols)
        part = SPLIT_VALUES.get(label_rules.clean_text(row[cols.split]).lower()) if cols.split is not None else None
        if not why and cols.split is not None and part is None:
            why = "empty split value" if not row[cols.split].strip() else f"missing split value ({row[cols.split].strip()!r})"
        if why:
            listing.skipped.append((where, why))
            continue
        path, why = finder.find(row[cols.file], csv_path, line)
        key = str(path) if path else row[cols.file].strip()
        if key in seen:
            first_line, first_label = seen[key]
            if first_label != label:  # which one is right is the user's call, not ours
                raise ConfigError(f"{where}: {row[cols.file].strip()} is labelled {label!r} here but "
                                  f"{first_label!r} on line {first_line}; fix the CSV")
            listing.skipped.append((where, f"duplicate row (first one kept): {row[cols.file].strip()}"))
            continue
        seen[key] = (line, label)
        if path is None:
            listing.skipped.append((str(root / row[cols.file].strip()) if why.startswith("listed") else where, why))
            continue
        convert = filetypes.needs_conversion(Path(path).name)  # a store member (str) has the store's name
        if convert:  # a DICOM listed in a CSV gets the words a DICOM in a class folder gets
            listing.skipped.append((str(path), convert))
            continue
        listing.files.append(str(path))
        listing.labels.append(label)
        if listing.groups is not None:
            listing.groups.append(label_rules.group_id(row[cols.group]) if cols.group < len(row) else "")
        if listing.parts is not None:
            listing.parts.append(part)
    if cols.multilabel:
        listing.findings = list(cols.one_hot.values()) if cols.one_hot else multilabel.finding_names(listing.labels)
    elif cols.one_hot:
        empty = [n for n in cols.one_hot.values() if n not in set(listing.labels)]
        if empty:
            log.warning("%s: one-hot column(s) %s have no positive row: not classes", csv_path.name, ", ".join(empty))
    if listing.groups is not None and not any(listing.groups):
        listing.groups = None
    if listing.groups is not None:
        _own_groups(listing, csv_path.name, header[cols.group].strip())
    return listing


def _own_groups(listing: Listing, csv_name: str, column: str) -> None:
    """An image with no group id is its own group: pooling the empty cells would make one giant
    'lesion' (ISIC metadata leaves most lesion_id cells empty) that the split then follows."""
    empty = [i for i, g in enumerate(listing.groups) if not g]
    for i in empty:
        listing.groups[i] = f"\x00image {i}"  # cannot collide with a cell: CSV text holds no NUL
    if empty:
        log.warning("%s: %d of %d images (%.0f%%) have no %r: each is its own group", csv_name, len(empty),
                    len(listing.groups), 100 * len(empty) / len(listing.groups), column)


TABLE_SUFFIXES = (".csv", ".tsv")


def tables(root: Path) -> list[Path]:
    """The visible CSV and TSV files directly in `root` (the delimiter is detected either way)."""
    return sorted(p for p in root.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file()
                  and not p.name.startswith((".", "@")))


def label_csvs(root: Path, finder: FileFinder | None = None) -> list[Path]:
    """CSVs in `root` with a file column (by name, or by cells naming files here) and labels: a named
    label column holding at least two values (a submission template's constant column is not one),
    one-hot columns, or a label column chosen by content."""
    found = []
    finder = finder or FileFinder(root)
    for candidate in tables(root):
        rows = read_rows(candidate)
        if not rows:
            continue
        header, body = rows[0][1], rows[1:column_guess.SAMPLE + 1]
        keys = [header_key(h) for h in header]
        files = _named(keys, FILE_COLUMNS) or [c for c in [column_guess.file_column(header, body, finder, candidate)]
                                               if c is not None]
        if not files:
            continue
        named = [c for c in _named(keys, LABEL_COLUMNS) if c != files[0]]
        free = [i for i, k in enumerate(keys) if k not in FILE_COLUMNS + GROUP_COLUMNS + SPLIT_COLUMNS + LABEL_COLUMNS
                and i != files[0] and not _is_index_column(header[i])]
        if named:
            if len(column_guess.distinct_values(column_guess.sample(body), named[0])) >= 2:
                found.append(candidate)
        elif _one_hot_columns(header, body, free) or column_guess.label_column(header, body, free)[0] is not None:
            found.append(candidate)
    return found


def file_match_share(root: Path, csv_path: Path, finder: FileFinder) -> float:
    """The share of a CSV's first rows whose file cell names a file here: which listing goes with the images."""
    rows = read_rows(csv_path)
    if len(rows) < 2:
        return 0.0
    header, body = rows[0][1], rows[1:51]
    keys = [header_key(h) for h in header]
    files = _named(keys, FILE_COLUMNS) or [column_guess.file_column(header, body, finder, csv_path)]
    if files[0] is None:
        return 0.0
    hits = 0
    for line, row in body:
        try:
            hits += files[0] < len(row) and finder.find(row[files[0]], csv_path, line)[0] is not None
        except ConfigError:
            continue
    return hits / len(body)
