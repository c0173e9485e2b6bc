"""New patients: engine.predict on images without labels (a flat folder, a CSV listing files,
one image) writes one row per readable image whatever the run was trained with, and names
every input it could not score; engine.evaluate on other data scores all of it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from engine import evaluate, predict
from engine.train import main as train_main
from tests.helpers import skip_figures

from . import broken

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One plain run and one trained on a 12-image --data.max_samples subset of 30 images."""
    root = tmp_path_factory.mktemp("predict")
    data = broken.good_folder(root / "data", n=30, classes=CLASSES)
    assert train_main(broken.fast_run_args(data, root / "run")) == 0  # no report figures: not under test
    assert train_main(broken.fast_run_args(data, root / "subset") + ["--data.max_samples", "12"]) == 0
    return data, root / "run", root / "subset"


def _new_patients(folder: Path, jpegs: int = 5, pngs: int = 3) -> list[str]:
    """A flat folder as a clinic exports it: JPEGs and PNGs of mixed sizes, one corrupt JPEG."""
    folder.mkdir(parents=True)
    names = []
    for i in range(jpegs):
        (folder / f"patient{i:02d}.jpg").write_bytes(broken.jpeg(broken.rgb_array(24 + 8 * i, i, seed=100 + i)))
        names.append(f"patient{i:02d}.jpg")
    for i in range(pngs):
        (folder / f"scan{i}.PNG").write_bytes(broken.png(broken.rgb_array(40, i, seed=200 + i)))
        names.append(f"scan{i}.PNG")
    (folder / "broken.jpg").write_bytes(broken.truncated_jpeg())
    return names


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _skipped(out: Path) -> dict[str, str]:
    return {Path(r["path"]).name: r["reason"] for r in _rows(out.with_name(out.stem + ".skipped.csv"))}


def _check_probabilities(rows: list[dict]) -> None:
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1, abs=1e-4)
        assert r["prediction"] == CLASSES[int(np.argmax(probs))]
        assert r["label"] == "" and r["split"] == "unlabelled"


@pytest.mark.parametrize("run_name", ["run", "subset"])
def test_flat_folder_of_unlabelled_jpegs_and_pngs_one_row_per_readable_image(runs, tmp_path, capsys, run_name):
    _, run, subset = runs
    folder = tmp_path / "clinic"
    names = _new_patients(folder)
    out = tmp_path / "preds.csv"
    checkpoint = run if run_name == "run" else subset  # a max_samples run must not drop any image
    assert predict.main(["--checkpoint", str(checkpoint), "--data", str(folder), "--out", str(out)]) == 0
    rows = _rows(out)
    assert sorted(r["file"] for r in rows) == sorted(names)  # every readable image, once
    _check_probabilities(rows)
    assert _skipped(out) == {"broken.jpg": "truncated JPEG (no end-of-image marker)"}
    err = capsys.readouterr().err
    assert "skipped 1 input(s): 1 truncated JPEG" in err and "broken.jpg" not in out.read_text()


def test_the_cli_on_a_folder_of_unlabelled_jpegs(runs, tmp_path):
    """The acceptance command, as a subprocess: one row per image, exit 0."""
    _, run, _ = runs
    folder = tmp_path / "new"
    names = _new_patients(folder, jpegs=7, pngs=0)
    (folder / "broken.jpg").unlink()
    result = broken.run_cli(["--checkpoint", run, "--data", folder, "--out", tmp_path / "preds.csv", "--device", "cpu"],
                            module="engine.predict")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(r["file"] for r in _rows(tmp_path / "preds.csv")) == sorted(names)
    assert not (tmp_path / "preds.skipped.csv").exists()


@pytest.mark.parametrize("layout", ["csv-file", "folder-with-csv", "headerless-csv"])
def test_a_csv_listing_files_without_labels(runs, tmp_path, layout):
    _, run, _ = runs
    folder = tmp_path / "batch"
    names = _new_patients(folder, jpegs=4, pngs=2)
    listed = names[::-1] + ["gone.jpg", names[0]]  # own order, one missing file, one duplicate
    header = [] if layout == "headerless-csv" else [["image"]]
    rows = header + [[n] for n in listed]
    csv_path = folder / "to_score.csv"
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "p.csv"
    data = csv_path if layout == "csv-file" else folder
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)]) == 0
    got = _rows(out)
    assert [r["file"] for r in got] == names[::-1]  # the CSV's order; broken.jpg was never listed
    _check_probabilities(got)
    skipped = _rows(out.with_name("p.skipped.csv"))
    reasons = sorted(r["reason"].split(" (")[0].split(":")[0] for r in skipped)
    assert reasons == ["duplicate row", "listed in the CSV but missing"]


def test_one_image(runs, tmp_path):
    _, run, _ = runs
    image = tmp_path / "lesion.jpeg"
    image.write_bytes(broken.jpeg(broken.rgb_array(48, 1, seed=9)))
    out = tmp_path / "one.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(image), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["file"] for r in rows] == ["lesion.jpeg"]
    _check_probabilities(rows)


def test_only_unreadable_images_is_one_error_line(runs, tmp_path, capsys):
    _, run, _ = runs
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(broken.truncated_jpeg())
    assert predict.main(["--checkpoint", str(run), "--data", str(folder), "--out", str(tmp_path / "p.csv")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: --data {folder}: no readable image (e.g. {folder / 'x.jpg'}: "
                   "truncated JPEG (no end-of-image marker))"]


def test_evaluate_refuses_unlabelled_input_and_points_to_predict(runs, tmp_path, capsys):
    _, run, _ = runs
    folder = tmp_path / "clinic"
    _new_patients(folder)
    assert evaluate.main(["--checkpoint", str(run), "--data", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "no labels found" in err and "engine.predict" in err


def test_labelled_predict_on_the_runs_own_data_keeps_its_splits_and_scores_every_image(runs, tmp_path):
    data, run, subset = runs
    for checkpoint in (run, subset):
        out = tmp_path / f"{checkpoint.name}.csv"
        assert predict.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
        rows = _rows(out)
        assert len(rows) == 30 and all(r["label"] in CLASSES for r in rows)
        assert {r["file"]: r["split"] for r in rows} == _splits_in_training(checkpoint, data)


def _splits_in_training(run: Path, data: Path) -> dict[str, str]:
    """file -> the split the run used it in, `unused` outside a subset: read as training read it."""
    from engine.options.config import Config
    from engine.options.resolve import data_spec
    from loaders.datasets import load_dataset
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()) | {"resolved": {}})
    ds = load_dataset(data_spec(cfg), seed=cfg.train.seed)
    names = {str(Path(f).relative_to(data)): part for part in ("train", "val", "test") for f in ds.split(part).files}
    every = [f"images/im{i:03d}.jpg" for i in range(30)]
    assert len(names) == (30 if not cfg.data.max_samples else 12)
    return {f: names.get(f, "unused") for f in every}


def test_evaluate_scores_all_of_other_data_and_the_test_split_of_its_own(runs, tmp_path, monkeypatch):
    data, run, _ = runs
    # evaluate's figures and Grad-CAM sample are not under test here (tests/eval/test_eval_cli.py reads the figures;
    # an mlp has no map, but looking for one imports grad-cam): they cost more than the scoring
    skip_figures(monkeypatch)
    # other bytes (size 40): images with the run's own content are recognised as its own (issue 27)
    external = broken.good_folder(tmp_path / "site_b", n=60, classes=CLASSES, size=40)
    assert evaluate.main(["--checkpoint", str(run), "--data", str(external), "--out", str(tmp_path / "ext")]) == 0
    ext = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert ext["test.n"] == 60 and ext["split"] == "all"
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert own["split"] == "test" and own["test.n"] == trained["test.n"] < 30
    assert evaluate.main(["--checkpoint", str(run), "--data", str(external), "--split", "test",
                          "--out", str(tmp_path / "ext_test")]) == 0  # asked for: a split of the other data
    assert json.loads((tmp_path / "ext_test" / "metrics.json").read_text())["test.n"] < 60


def test_a_labelled_folder_stays_labelled_beside_a_csv_that_only_lists_files(runs, tmp_path):
    data, run, _ = runs
    labelled = broken.good_folder(tmp_path / "site", n=12, classes=CLASSES)
    (labelled / "a_file_list.csv").write_text("file\n" + "".join(f"images/im{i:03d}.jpg\n" for i in range(12)))
    out = tmp_path / "p.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(labelled), "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 12 and {r["split"] for r in rows} == {"all"}
    assert all(r["label"] == CLASSES[int(r["file"][9:12]) % 3] for r in rows)


def test_the_unlabelled_reader_does_not_import_engine():
    import ast
    source = (broken.REPO / "loaders" / "unlabelled.py").read_text()
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    assert imported and not [m for m in imported if m and m.split(".")[0] == "engine"]
