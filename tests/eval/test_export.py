"""engine.export: the ONNX / torch.export artefact takes raw uint8 NHWC images and gives the
engine's own probabilities (onnxruntime within 1e-4 of engine.predict on a fixed batch)."""
import dataclasses
import csv
import json

import numpy as np
import pytest
import torch

from engine import export, predict
from engine.run.restore import restore
from kernels.augment import AugmentSpec
from loaders import images
from models.registry import build_model
from tests.helpers import tiny_args, train, write_jpegs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data, run): a planned seedcnn run (export applies what the plan chose); no report figures,
    which export never reads."""
    root = tmp_path_factory.mktemp("export")
    data = write_jpegs(root / "data", n=36, size=24)
    return data, train(data, root / "run", tiny_args("seedcnn"), report=False)


def test_onnx_matches_engine_predict_on_the_test_images(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    data, run = trained
    out = tmp_path / "model.onnx"
    assert export.main(["--checkpoint", str(run), "--format", "onnx", "--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["parity"]["max_abs_diff"] <= 1e-4 and sidecar["classes"] == ["a", "b", "c"]
    assert sidecar["input"]["shape"] == ["batch", 24, 24, 3] and sidecar["input"]["dtype"] == "uint8"
    preds = tmp_path / "p.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(preds), "--split", "test"]) == 0
    rows = list(csv.DictReader(preds.open()))
    raw = np.stack([images.decode(images.read_bytes(str(data / r["file"])), 24) for r in rows])
    expected = np.array([[float(r[f"p_{c}"]) for c in "abc"] for r in rows])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["probs"], {"images": raw})[0]
    assert got.shape == (len(rows), 3)
    assert np.abs(got - expected).max() <= 1e-4  # the CSV rounds to 6 decimals


def test_torch_export_program_round_trips(trained, tmp_path):
    _, run = trained
    out = tmp_path / "model.pt2"
    assert export.main(["--checkpoint", str(run), "--format", "torch", "--out", str(out)]) == 0
    program = torch.export.load(str(out)).module()
    batch = export.parity_images(3, 24)  # another batch size than the export's: the batch is dynamic
    restored = restore(str(run), "cpu")
    spec = AugmentSpec(out_size=24, train=False)
    assert torch.allclose(program(batch), export.engine_probs(restored, spec, batch), atol=1e-5)


def test_the_wrapper_reproduces_crop_normalization_and_prior_correction():
    """eval_crop < 1 resamples with the loaders' grid; tau shifts the probabilities as decisions.adjust does."""
    from engine.score import decisions
    from kernels.augment import DeviceAugment
    torch.manual_seed(0)
    model = build_model("seedcnn", 4, 20).eval()
    spec = AugmentSpec(out_size=20, train=False, eval_crop=0.8)
    decision = {"tau": 0.7, "log_prior": np.log([0.1, 0.2, 0.3, 0.4]).tolist()}
    raw = export.parity_images(5, 20)
    with torch.no_grad():
        got = export.RawImageClassifier(model, spec, decision)(raw)
        seen = DeviceAugment(spec, 0, "cpu", impl="reference")(raw.permute(0, 3, 1, 2), 0)
        want = decisions.adjust(model(seen).softmax(1), decision)
        plain = export.RawImageClassifier(model, spec, None)(raw)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)  # the correction is really applied


def test_bad_input_is_one_error_line(trained, tmp_path, capsys):
    _, run = trained
    assert export.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert export.main(["--checkpoint", str(run), "--out", str(tmp_path / "missing" / "m.onnx")]) == 2
    assert export.main(["--checkpoint", str(run), "--format", "torch", "--out", str(tmp_path / "m.onnx")]) == 2
    assert export.main(["--checkpoint", str(run), "--format", "tflite", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "no checkpoint" in err[0] and "does not exist" in err[1] and ".pt2" in err[2] and "onnx, torch" in err[3]


def test_help_describes_every_option(capsys):
    assert export.main(["--help"]) == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(export.Options):  # each option with its one-line description
        assert f"--{f.name.replace('_', '-')} " in text and f.metadata["help"] in text
