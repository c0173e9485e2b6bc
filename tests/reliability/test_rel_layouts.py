"""Public dataset layouts as downloaded: columns and folders read by what they hold, and every
hint the engine prints, when followed, leads to a correct run or a clearer refusal
(loaders/column_guess.py, loaders/datasets.py, loaders/tree.py, loaders/unlabelled.py)."""
from __future__ import annotations

import csv
import re

import pytest

from engine.options.config import ConfigError
from loaders.datasets import load_dataset

from . import broken

DIAGNOSES = ("ACK", "BCC", "MEL", "NEV")


def _load(path, **kw):
    return load_dataset(broken.data_cfg(path, **kw))


def _table(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _image(path, i=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(broken.jpeg(broken.rgb_array(16, i % 4, seed=i)))


def _hint(message: str) -> str:
    return re.search(r"--data (\S+?)[;),]?( |$)", message).group(1)


def test_metadata_csv_with_a_label_column_no_list_names_is_used(tmp_path):
    # PAD-UFES-20: metadata.csv (label `diagnostic`, file `img_id`) beside images/imgs_part_1..2/
    rows = []
    for i in range(32):
        name = f"PAT_{i // 2}_{i}_{100 + i}.png"
        _image(tmp_path / "images" / f"imgs_part_{1 + i % 2}" / name, i)
        rows.append([f"PAT_{i // 2}", str(i), ["True", "False"][i % 2], ["ARM", "FACE", "BACK"][i % 3], str(40 + i),
                     DIAGNOSES[i % 4], name, ["True", "False"][i % 3 == 0]])
    _table(tmp_path / "metadata.csv", ["patient_id", "lesion_id", "smoke", "region", "age", "diagnostic", "img_id",
                                       "biopsed"], rows)
    ds = _load(tmp_path)
    assert ds.classes == sorted(DIAGNOSES)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 32
    assert ds.train.groups is not None  # grouped by patient


def test_a_file_column_found_by_its_cells_and_a_submission_template_passed_over(tmp_path):
    # ISIC 2024: train-metadata.csv (isic_id without extension, target) + train-image/image/ + sample_submission.csv
    rows = []
    for i in range(30):
        _image(tmp_path / "train-image" / "image" / f"ISIC_{9000000 + i}.jpg", i)
        rows.append([f"ISIC_{9000000 + i}", str(i % 2), f"IP_{i // 3}", "" if i % 5 else f"IL_{i}", str(40 + i % 30)])
    _table(tmp_path / "train-metadata.csv", ["isic_id", "target", "patient_id", "lesion_id", "age_approx"], rows)
    _table(tmp_path / "sample_submission.csv", ["isic_id", "target"], [[f"ISIC_{9000000 + i}", "0.3"] for i in range(3)])
    ds = _load(tmp_path)
    assert ds.classes == ["0", "1"] and len(ds.train) + len(ds.val) + len(ds.test) == 30


def test_an_ambiguous_label_column_is_named_and_the_hint_works(tmp_path):
    rows = []
    for i in range(24):
        _image(tmp_path / "imgs" / f"x{i}.jpg", i)
        rows.append([f"x{i}.jpg", ["yes", "no"][i % 2], ["arm", "leg", "back"][i % 3]])
    _table(tmp_path / "meta.csv", ["file", "smoke", "site"], rows)
    with pytest.raises(ConfigError, match=r"meta\.csv: no column is named as the label, and several could be "
                                          r"\('smoke', 'site'\); rename the one holding the diagnosis to 'label' "
                                          r"\(found header 'file,smoke,site'\)"):
        _load(tmp_path / "meta.csv")
    _table(tmp_path / "meta.csv", ["file", "smoke", "label"], rows)  # the hint followed
    assert _load(tmp_path / "meta.csv").classes == ["arm", "back", "leg"]


def test_labels_tsv_and_upper_case_extensions_in_the_listing(tmp_path):
    rows = []
    for i in range(20):
        _image(tmp_path / "images" / f"im{i}.jpg", i)
        rows.append([f"images/im{i}.JPG", "ab"[i % 2]])
    _table(tmp_path / "labels.tsv", ["file", "label"], rows, delimiter="\t")
    ds = _load(tmp_path)
    assert ds.classes == ["a", "b"] and not ds.skipped


def test_dicom_listed_in_a_csv_gets_the_tree_hint(tmp_path):
    rows = [[f"im{i}.jpg", "ab"[i % 2]] for i in range(20)] + [["scan.dcm", "a"]]
    for i in range(20):
        _image(tmp_path / f"im{i}.jpg", i)
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    _table(tmp_path / "labels.csv", ["file", "label"], rows)
    ds = _load(tmp_path)
    # DICOM is read now (loaders/dicom.py): a CSV-listed file is read, and skipped with the
    # reader's own reason, exactly as the same file in a class folder (tests/loaders/test_dicom.py)
    assert ds.skipped == [(str((tmp_path / "scan.dcm").resolve()), "DICOM without pixel data")]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 20


def _chexpert(root, patients=12):
    rows = []
    for p in range(patients):
        for study in (1, 2) if p % 2 else (1,):
            rel = f"train/patient{p + 1:05d}/study{study}/view1_frontal.jpg"
            _image(root / rel, p)
            rows.append([f"CheXpert-v1.0-small/{rel}", ["Male", "Female"][p % 2], str(50 + p), "Frontal",
                         ["1.0", "0.0", "-1.0", ""][p % 4], ["0.0", "1.0", ""][p % 3]])
    _table(root / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "Cardiomegaly", "Edema"], rows)


def test_nested_patient_study_folders_are_not_classes_and_the_hint_leads_to_a_clearer_refusal(tmp_path):
    _chexpert(tmp_path)
    with pytest.raises(ConfigError, match=r"12 folders with a median of 2 image\(s\) each \(e\.g\. "
                                          r"train/patient00001/study1/view1_frontal\.jpg\) look like patient/study "
                                          r"ids, not classes; .*a CSV nearby may hold them \(train\.csv\)"):
        _load(tmp_path)
    with pytest.raises(ConfigError, match=r"train\.csv: no column is named as the label, and several could be"):
        _load(tmp_path / "train.csv")


def test_hundreds_of_id_folders_are_not_classes(tmp_path):
    for i in range(60):
        _image(tmp_path / f"lesion{i:04d}" / "a.jpg", i)
    with pytest.raises(ConfigError, match=r"60 folders with a median of 1 image\(s\) each .* look like patient/study ids"):
        _load(tmp_path)


def test_small_class_trees_still_read(tmp_path):
    for c in "0123456789":  # class numbers, a few images each: a class tree
        for i in range(2):
            _image(tmp_path / c / f"{i}.jpg", i)
    assert len(_load(tmp_path).classes) == 10


def test_one_class_hint_names_the_table_beside_the_images(tmp_path):
    for part in (1, 2):
        for i in range(4):
            _image(tmp_path / "images" / f"imgs_part_{part}" / f"p{part}_{i}.png", i)
    _table(tmp_path / "metadata.csv", ["patient", "note"], [["a", "x"]])
    with pytest.raises(ConfigError) as err:
        _load(tmp_path)
    assert "metadata.csv is here but was not read as labels" in str(err.value)
    with pytest.raises(ConfigError, match=r"metadata\.csv: no file column"):  # the hint followed: a clearer refusal
        _load(_hint(str(err.value)))
