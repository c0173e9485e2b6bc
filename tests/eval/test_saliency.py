"""Grad-CAM saliency: the per-architecture layer rule, a map that finds a planted patch, the
report's per-class sample and `engine.predict --explain`."""
import csv
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from common.errors import ConfigError
from engine import predict
from engine.output import saliency
from engine.train import main as train_main
from models.cam_layers import cam_target_layers
from models.registry import build_model
from tests.helpers import write_jpegs

# Looked up, not imported: importing grad-cam imports triton.language, and the kernel tests'
# Triton interpreter (tests/kernels/conftest.py) must be chosen before that happens.
if importlib.util.find_spec("pytorch_grad_cam") is None:
    pytest.skip("grad-cam is not installed (the `explain` extra)", allow_module_level=True)
SIZE = 24


def _patch_data(n: int, size: int, seed: int):
    """Noise; class 1 also has a bright 6x6 square at a random place. Returns images, labels, boxes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.5
    y = torch.arange(n) % 2
    boxes = torch.randint(0, size - 6, (n, 2), generator=g)
    for i in range(n):
        if y[i] == 1:
            r, c = boxes[i].tolist()
            x[i, :, r:r + 6, c:c + 6] = 1.0
    return x.contiguous(memory_format=torch.channels_last), y, boxes


@pytest.fixture(scope="module")
def patch_model():
    torch.manual_seed(0)
    model = build_model("seedcnn", 2, SIZE, dropout=0.0)
    x, y, _ = _patch_data(192, SIZE, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    return model.eval()


def test_the_map_highlights_the_planted_patch(patch_model):
    x, y, boxes = _patch_data(32, SIZE, seed=2)
    with torch.no_grad():
        assert (patch_model(x).argmax(1) == y).float().mean() > 0.9  # it learned the patch
    rows = torch.nonzero(y == 1).flatten()
    maps = saliency.cam_maps(patch_model, "seedcnn", x[rows], [1] * len(rows))
    assert maps.shape == (len(rows), SIZE, SIZE)
    inside = []
    for m, (r, c) in zip(maps, boxes[rows].tolist()):
        mask = np.zeros((SIZE, SIZE), bool)
        mask[r:r + 6, c:c + 6] = True
        inside.append(m[mask].mean() > 2 * m[~mask].mean())
    assert np.mean(inside) >= 0.8, np.mean(inside)


def test_the_map_has_the_image_size_varies_and_depends_on_the_target(patch_model):
    x, y, _ = _patch_data(8, SIZE, seed=3)
    x = x[y == 1]  # images with a patch: the class-1 map has something to find
    first, second = saliency.cam_maps(patch_model, "seedcnn", x, [0] * 4), saliency.cam_maps(patch_model, "seedcnn", x, [1] * 4)
    assert first.shape == second.shape == (4, SIZE, SIZE)
    assert all(m.std() > 1e-3 for m in second) and np.abs(first - second).max() > 0.1
    assert patch_model.training is False  # left in eval mode


@pytest.mark.parametrize("name,expected", [
    ("seedcnn", lambda m: m[2]), ("resnet9_small", lambda m: m[8]), ("resnet18", lambda m: m.layer4[-1]),
    ("resnet50", lambda m: m.layer4[-1]), ("efficientnet_b0", lambda m: m.features[-1]),
])
def test_each_architecture_has_its_layer_and_a_map(name, expected):
    torch.manual_seed(0)
    model = build_model(name, 3, 32).eval()
    assert cam_target_layers(model, name) == [expected(model)]
    maps = saliency.cam_maps(model, name, torch.randn(2, 3, 32, 32), [0, 2])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_timm_models_use_their_last_feature_stage():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=3).eval()
    assert cam_target_layers(model, "timm/resnet18") == [model.layer4]


def test_a_model_without_convolutions_is_refused():
    with pytest.raises(ConfigError, match="no convolutional layer"):
        cam_target_layers(build_model("mlp", 3, 28), "mlp")


def test_the_sample_is_per_class_bounded_and_deterministic():
    probs = np.array([[.9, .1], [.6, .4], [.8, .2], [.7, .3], [.3, .7], [.45, .55], [.2, .8], [.1, .9]])
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    predictions = probs.argmax(1)
    rows = saliency.sample_rows(probs, labels, predictions)
    # class 0: correct 0 (.9), 2 (.8); wrong 5 (.55). class 1: correct 7 (.9), 6 (.8); wrong 3 (.7)
    assert rows.tolist() == [0, 2, 5, 7, 6, 3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    data = write_jpegs(root / "data", n=36, size=24)
    run = root / "run"
    # the report is what is tested; the plan's timed calibration is not
    assert train_main(["--data", str(data), "--out", str(run), "--model", "seedcnn", "--epochs", "1",
                       "--batch-size", "8", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
                       "--run.plan", "off"]) == 0
    return data, run


def test_the_report_shows_overlays_for_the_fixed_sample(trained):
    _, run = trained
    with np.load(run / "test_predictions.npz") as saved:
        probs, labels = saved["probs"], saved["labels"]
    with np.load(run / saliency.SAMPLE_FILE) as sample:
        assert sample["rows"].tolist() == saliency.sample_rows(probs, labels, probs.argmax(1)).tolist()
        assert sample["overlays"].shape[1:] == (24, 24, 3) and len(sample["rows"]) <= 4 * 3
    with Image.open(run / "report" / saliency.FIGURE) as im:
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5
    assert f"]({saliency.FIGURE})" in (run / "report" / "README.md").read_text()


def test_predict_explain_writes_one_overlay_per_image(trained, tmp_path):
    data, run = trained
    out, explain = tmp_path / "p.csv", tmp_path / "maps"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out),
                         "--explain", str(explain)]) == 0
    rows = list(csv.DictReader(out.open()))
    written = sorted(str(p.relative_to(explain)) for p in explain.rglob("*.png"))
    assert written == sorted(r["file"].replace(".jpg", ".png") for r in rows) and len(written) == 36
    with Image.open(explain / written[0]) as im:
        assert im.size == (24, 24) and im.mode == "RGB"


@pytest.mark.gpu
def test_gpu_maps_match_the_cpu_maps(patch_model):
    x, _, _ = _patch_data(4, SIZE, seed=4)
    cpu = saliency.cam_maps(patch_model, "seedcnn", x, [1] * 4)
    gpu_model = build_model("seedcnn", 2, SIZE, dropout=0.0)
    gpu_model.load_state_dict(patch_model.state_dict())
    gpu = saliency.cam_maps(gpu_model.cuda().eval(), "seedcnn", x.cuda(), [1] * 4)
    assert np.abs(cpu - gpu).max() < 1e-2


# ----------------------------------------------------------------------------- multi-label findings

def test_the_findings_sample_is_per_finding_found_then_missed():
    probs = np.array([[.9, .2], [.6, .7], [.3, .1], [.8, .4], [.1, .95]])
    labels = np.array([[1, 0], [1, 1], [1, 1], [0, 1], [1, 0]])
    decided = (probs >= np.array([.5, .5])).astype(int)
    rows, findings, found, confidence = saliency.sample_findings(probs, labels, decided)
    # finding 0: found 0 (.9), 1 (.6); missed 4 (.1), 2 (.3). finding 1: found 1 (.7); missed 2 (.1), 3 (.4)
    assert rows.tolist() == [0, 1, 4, 2, 1, 2, 3]
    assert findings.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert found.tolist() == [True, True, False, False, True, False, False]
    assert confidence.tolist() == [.9, .6, .1, .3, .7, .1, .4]
    # --explain: the most probable decided finding, else the most probable one
    assert saliency.top_findings(probs, decided).tolist() == [0, 1, 0, 0, 1]


@pytest.fixture(scope="module")
def trained_findings(tmp_path_factory):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loaders"))
    from multilabel_testdata import findings, learnable_images
    root = tmp_path_factory.mktemp("saliency_findings")
    y = findings(120)
    data = root / "chest_tiny.npz"
    np.savez(data, train_images=learnable_images(y), train_labels=y)
    run = root / "run"
    assert train_main(["--data", str(data), "--out", str(run), "--model", "seedcnn", "--epochs", "2", "--image-size",
                       "16", "--batch-size", "24", "--device", "cpu", "--wandb", "disabled", "--train.progress", "off",
                       "--run.plan", "off", "--lr", "0.003"]) == 0
    return data, run


def test_a_multilabel_report_shows_overlays_per_finding(trained_findings):
    _, run = trained_findings
    with np.load(run / "test_predictions.npz") as saved:
        probs, labels = saved["probs"], saved["labels"]
    m = __import__("json").loads((run / "metrics.json").read_text())
    decided = (probs >= np.array([m[f"test.threshold.{c}"] for c in m["classes"]])).astype(int)
    rows, findings, found, _ = saliency.sample_findings(probs, labels, decided)
    assert len(rows) > 0
    with np.load(run / saliency.SAMPLE_FILE) as sample:  # before the fix: an IndexError, warned, no sample
        assert sample["rows"].tolist() == rows.tolist() and sample["labels"].tolist() == findings.tolist()
        assert sample["correct"].tolist() == found.tolist() and bool(sample["multilabel"])
        assert sample["overlays"].shape == (len(rows), 16, 16, 3)
    with Image.open(run / "report" / saliency.FIGURE) as im:
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5
    assert f"]({saliency.FIGURE})" in (run / "report" / "README.md").read_text()


def test_predict_explain_on_findings_writes_one_overlay_per_image_for_its_top_finding(trained_findings, tmp_path):
    data, run = trained_findings
    out, explain = tmp_path / "p.csv", tmp_path / "maps"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out), "--device", "cpu",
                         "--explain", str(explain)]) == 0
    rows = list(csv.DictReader(out.open()))
    written = sorted(str(p.relative_to(explain)) for p in explain.rglob("*.png"))
    assert len(rows) == 120 and written == sorted(f"{r['split']}_{int(r['index']):05d}.png" for r in rows)
    classes = [c[2:] for c in rows[0] if c.startswith("p_")]
    for r in rows:
        p = np.array([float(r[f"p_{c}"]) for c in classes])
        d = np.array([int(r[f"decision_{c}"]) for c in classes])
        assert r["explained"] == classes[int(saliency.top_findings(p[None], d[None])[0])]
    with Image.open(explain / written[0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
