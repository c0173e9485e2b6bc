"""Label files and folders: each problem is a clear error or a stated, logged decision,
never a silent label shift."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.options.config import ConfigError
from loaders.datasets import load_dataset

from . import broken


def _with_rows(tmp_path, extra_rows, n=24, classes=("a", "b", "c")) -> Path:
    root = broken.good_folder(tmp_path / "data", n=n, classes=classes)
    with open(root / "labels.csv", "a") as fh:
        for row in extra_rows:
            fh.write(",".join(row) + "\n")
    return root


def _load(root, **overrides):
    return load_dataset(broken.data_cfg(root, **overrides))


def _skips(ds) -> dict[str, str]:
    return {Path(p.split(":")[0]).name + (":" + p.split(":")[1] if ":" in p else ""): r for p, r in ds.skipped}


def _all_labels(ds) -> dict[str, str]:
    return {f: ds.classes[y] for part in (ds.train, ds.val, ds.test) for f, y in zip(part.files, part.labels)}


def test_missing_files_are_skipped_and_named(tmp_path):
    ds = _load(_with_rows(tmp_path, [["images/gone.jpg", "a"], ["images/also_gone.jpg", "b"]]))
    assert sorted(_skips(ds).items()) == [("also_gone.jpg", "listed in the CSV but missing"),
                                          ("gone.jpg", "listed in the CSV but missing")]
    assert len(_all_labels(ds)) == 24


@pytest.mark.parametrize("label", ["", "  ", "nan", "NA", "?", "None", "null"])
def test_empty_or_missing_label_skips_the_row_instead_of_making_a_class(tmp_path, label):
    root = _with_rows(tmp_path, [])
    (root / "images" / "x.jpg").write_bytes(broken.jpeg())
    with open(root / "labels.csv", "a") as fh:
        fh.write(f"images/x.jpg,{label}\n")
    ds = _load(root)
    assert ds.classes == ["a", "b", "c"]
    reason = "empty label" if not label.strip() else f"missing label ({label!r})"
    assert _skips(ds) == {"labels.csv:26": reason}


def test_identical_duplicate_row_is_skipped_once(tmp_path):
    ds = _load(_with_rows(tmp_path, [["images/im001.jpg", "b"]]))
    assert _skips(ds) == {"labels.csv:26": "duplicate row (first one kept): images/im001.jpg"}
    assert len(_all_labels(ds)) == 24


def test_conflicting_duplicate_labels_are_an_error(tmp_path):
    root = _with_rows(tmp_path, [["images/im001.jpg", "c"]])  # line 3 says "b"
    with pytest.raises(ConfigError, match=r"labels\.csv:26: images/im001\.jpg is labelled 'c' here "
                                          r"but 'b' on line 3; fix the CSV"):
        _load(root)


def test_labels_differing_only_in_case_or_spaces(tmp_path):
    root = _with_rows(tmp_path, [])
    (root / "images" / "x.jpg").write_bytes(broken.jpeg())
    (root / "images" / "y.jpg").write_bytes(broken.jpeg())
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/x.jpg, a \n")  # surrounding spaces: the same class
    assert _load(root).classes == ["a", "b", "c"]
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/y.jpg,A\n")  # another case: not silently a fourth class
    with pytest.raises(ConfigError, match=r"labels 'A' and 'a' differ only in case"):
        _load(root)


def test_single_class_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"only one class \('a'\) found; classification needs at least 2"):
        _load(broken.good_folder(tmp_path / "one", n=8, classes=("a",)))


def test_class_with_no_training_sample_is_logged(tmp_path, caplog):
    # Grouped split: class "rare" lives only in a lesion whose other images are "a", and that
    # lesion may land in val or test; a seed where it does shows the warning.
    root = broken.good_folder(tmp_path / "grp", n=40, classes=("a", "b"), groups=True)
    for i in range(3):
        (root / "images" / f"rare{i}.jpg").write_bytes(broken.jpeg())
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/rare0.jpg,rare,gX\nimages/rare1.jpg,a,gX\nimages/rare2.jpg,a,gX\n")
    for seed in range(20):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medtrain.data"):
            ds = load_dataset(broken.data_cfg(root), seed=seed)
        rare = ds.classes.index("rare")
        if not (ds.train.labels == rare).any():
            assert "class 'rare' has no training sample after the split (1 in val/test)" in caplog.text
            return
        assert "no training sample" not in caplog.text
    pytest.fail("no seed put the rare lesion outside train")


@pytest.mark.parametrize("name, message", [
    ("../outside.jpg", r"labels\.csv:26: path '\.\./outside\.jpg' escapes the data folder"),
    ("images/../../outside.jpg", r"labels\.csv:26: path 'images/\.\./\.\./outside\.jpg' escapes the data folder"),
    ("/etc/passwd", r"labels\.csv:26: absolute path '/etc/passwd' not allowed"),
])
def test_paths_escaping_the_data_folder_are_refused(tmp_path, name, message):
    (tmp_path / "outside.jpg").write_bytes(broken.jpeg())
    with pytest.raises(ConfigError, match=message):
        _load(_with_rows(tmp_path, [[name, "a"]]))


def test_symlink_leaving_the_folder_is_refused(tmp_path):
    root = _with_rows(tmp_path, [["images/link.jpg", "a"]])
    (tmp_path / "outside.jpg").write_bytes(broken.jpeg())
    (root / "images" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with pytest.raises(ConfigError, match=r"path 'images/link\.jpg' escapes the data folder"):
        _load(root)


def test_short_row_is_skipped_with_its_line(tmp_path):
    ds = _load(_with_rows(tmp_path, [["images/im000.jpg"]]))
    assert _skips(ds) == {"labels.csv:26": "row has 1 columns; expected at least 2"}


def test_csv_in_another_encoding_is_a_clear_error(tmp_path):
    root = broken.good_folder(tmp_path / "enc", n=6)
    with open(root / "labels.csv", "ab") as fh:
        fh.write("images/im000.jpg,naevus_\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"labels\.csv: not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"):
        _load(root)


def test_binary_file_named_csv_is_a_clear_error(tmp_path):
    root = broken.good_folder(tmp_path / "bin", n=6)
    (root / "labels.csv").write_bytes(b"file,label\n" + b"\x00\x01\x02" * 50)
    with pytest.raises(ConfigError, match=r"labels\.csv: not a readable CSV"):
        _load(root)


def test_empty_csv_and_csv_without_label_column(tmp_path):
    root = broken.good_folder(tmp_path / "e", n=6)
    (root / "labels.csv").write_text("")
    with pytest.raises(ConfigError, match=r"empty CSV; expected a header file,label\[,group\]"):
        _load(root)
    (root / "labels.csv").write_text("file\nimages/im000.jpg\n")
    with pytest.raises(ConfigError, match=r"no label column; expected a header file,label\[,group\]"):
        _load(root)


def test_csv_without_header_row_keeps_its_first_row(tmp_path, caplog):
    root = broken.good_folder(tmp_path / "nohead", n=12)
    lines = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join(lines[1:]) + "\n")
    with caplog.at_level(logging.WARNING, logger="medtrain.data"):
        ds = _load(root)
    assert len(_all_labels(ds)) == 12 and ds.classes == ["a", "b", "c"]
    assert "labels.csv has no header row" in caplog.text


def test_folder_without_csv_or_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(broken.jpeg())
    with pytest.raises(ConfigError, match=r"flat: no CSV and no class folders; expected a MedMNIST \.npz"):
        _load(tmp_path / "flat")


def test_missing_data_path_names_path_and_formats(tmp_path):
    with pytest.raises(ConfigError, match=r"--data .*nowhere: no such file or folder; expected a MedMNIST \.npz, "
                                          r"a class-per-folder tree, a folder with a CSV"):
        _load(tmp_path / "nowhere")


def test_evaluating_on_data_with_an_unknown_label_is_refused(tmp_path):
    """A label the checkpoint never saw cannot be scored: refused, not mapped onto a known class."""
    from engine.train import main

    data = broken.good_folder(tmp_path / "train", n=24, classes=("a", "b"))
    assert main(broken.fast_run_args(data, tmp_path / "run")) == 0
    other = broken.good_folder(tmp_path / "other", n=12, classes=("a", "b", "zz"))
    result = broken.run_cli(["--checkpoint", tmp_path / "run", "--data", other, "--device", "cpu"],
                            module="engine.evaluate")
    line = broken.error_line(result)
    assert line.startswith(f"error: --data {other}: classes ['a', 'b', 'zz'] do not match the checkpoint's ['a', 'b']")
