"""Device CLAHE against OpenCV's createCLAHE on random and real images."""
import numpy as np
import pytest
import torch
from engine.options.resolve import loader_spec

from kernels.augment import AugmentSpec, DeviceAugment
from kernels.clahe import clahe, clahe_rgb

cv2 = pytest.importorskip("cv2")


def opencv(plane: np.ndarray, clip: float, tiles: tuple[int, int]) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles[1], tiles[0])).apply(plane)


def assert_close_to_opencv(plane: np.ndarray, clip: float, tiles=(8, 8), device="cpu"):
    ours = clahe(torch.from_numpy(plane.copy()).to(device), clip, tiles).cpu().numpy()
    diff = np.abs(ours.astype(int) - opencv(plane, clip, tiles).astype(int))
    # Bit-exact with OpenCV 5.0 here; allow float-rounding ties of other builds (SIMD paths).
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("shape,clip,tiles", [
    ((64, 64), 2.0, (8, 8)),      # divides evenly
    ((37, 50), 2.0, (4, 4)),      # odd, padded on both axes
    ((48, 45), 3.0, (8, 5)),      # one axis divides: OpenCV still pads it by a full tile
    ((28, 28), 40.0, (8, 8)),     # MedMNIST size, OpenCV's default clip
    ((33, 31), 0.0, (3, 3)),      # no clipping: plain adaptive equalization
    ((5, 5), 2.0, (8, 8)),        # smaller than the grid: one-pixel tiles
])
def test_matches_opencv_random(shape, clip, tiles):
    rng = np.random.default_rng(sum(shape))
    # Low-contrast blobs rather than uniform noise, so clipping and blending both matter.
    base = rng.integers(60, 120, shape).astype(np.float64)
    base[: shape[0] // 2] += 40
    assert_close_to_opencv(np.clip(base, 0, 255).astype(np.uint8), clip, tiles)


def test_flat_image_and_batch_of_planes():
    flat = np.full((16, 16), 7, np.uint8)
    assert_close_to_opencv(flat, 2.0, (4, 4))
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 256, (2, 3, 24, 40), dtype=np.uint8)
    out = clahe(torch.from_numpy(planes), 2.0, (4, 4)).numpy()
    for i in range(2):
        for c in range(3):
            assert np.array_equal(out[i, c], clahe(torch.from_numpy(planes[i, c]), 2.0, (4, 4)).numpy())


def test_matches_opencv_on_real_jpegs(ham_dir):
    from PIL import Image
    for path in sorted(ham_dir.rglob("*.jpg"))[:3]:
        grey = np.asarray(Image.open(path).convert("L"))
        assert_close_to_opencv(grey, 2.0)
        assert_close_to_opencv(grey[:201, :173], 3.0)


def test_rgb_grey_image_equals_per_plane_and_keeps_hue():
    rng = np.random.default_rng(1)
    grey = rng.integers(30, 200, (1, 1, 40, 40), dtype=np.uint8).repeat(3, 1)
    out = clahe_rgb(torch.from_numpy(grey))
    assert torch.equal(out[0, 0], clahe(torch.from_numpy(grey[0, 0])))
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    colour = torch.from_numpy(rng.integers(20, 200, (2, 3, 32, 32), dtype=np.uint8))
    result = clahe_rgb(colour).float()
    # Channel ratios (hue, saturation) survive up to the uint8 rounding.
    ratio_in = colour[:, 0].float() / colour.amax(1).float()
    ratio_out = result[:, 0] / result.amax(1).clamp(min=1)
    bright = result.amax(1) > 60
    assert (ratio_in - ratio_out)[bright].abs().max() < 0.03


def test_device_augment_applies_clahe_first():
    x = torch.from_numpy(np.random.default_rng(2).integers(80, 140, (2, 32, 32, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    spec = AugmentSpec(out_size=32, train=False, clahe=True, mean=(0, 0, 0), std=(1, 1, 1))
    out = DeviceAugment(spec, 0, "cpu")(x, 0)
    want = clahe_rgb(x).float() / 255
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


def test_too_small_for_grid_is_clear_error():
    with pytest.raises(ValueError, match="too small"):
        clahe(torch.zeros(3, 3, dtype=torch.uint8), 2.0, (8, 8))


@pytest.mark.gpu
def test_cuda_matches_opencv():
    rng = np.random.default_rng(3)
    assert_close_to_opencv(rng.integers(50, 150, (224, 224), dtype=np.uint8), 2.0, device="cuda")
    assert_close_to_opencv(rng.integers(50, 150, (101, 77), dtype=np.uint8), 4.0, device="cuda")


def test_data_clahe_reaches_the_loaders(tiny_csv):
    from engine.options.config import ConfigError, parse_args
    from loaders import base
    from loaders.datasets import load_dataset

    def first_val_batch(extra, name="tensor"):
        cfg = parse_args(["--data", str(tiny_csv), "--batch-size", "4", "--device", "cpu", *extra]).config
        ds = load_dataset(cfg.data)
        return next(iter(base.build_loader(name, ds, "val", loader_spec(cfg), torch.device("cpu"), train=False)))[0]

    assert not torch.allclose(first_val_batch([]), first_val_batch(["--data.clahe", "true"]))
    torch.testing.assert_close(first_val_batch(["--data.clahe", "true"]),
                               first_val_batch(["--data.clahe", "true"], name="plain"))
    with pytest.raises(ConfigError, match="clahe"):
        first_val_batch(["--data.clahe", "true"], name="baseline")
