"""`python -m engine.export --checkpoint RUN --format onnx|torch --out FILE [--parity-batch N] [--opset N]
[--tolerance X]`

Exports a trained run as one model that takes raw images and returns probabilities:
input `images`, uint8, NHWC (batch, S, S, 3), RGB, S the run's image size (resize to S x S
first, bilinear, as the engine's loaders do); output `probs`, float32 (batch, classes), the
softmax with the checkpoint's stored prior correction applied, so exactly the probabilities
`engine.predict` writes (a binary operating threshold, when stored, is in the sidecar JSON).
The exported module holds the engine's evaluation preprocessing (the centre crop when
`--data.eval_crop` < 1, the 1/255 scale and the mean/std normalization). CLAHE, colour
constancy and metadata-fused models are refused: they are not part of the exported graph.

`onnx` (FILE.onnx): torch's ONNX exporter, dynamic batch; `torch` (FILE.pt2): a torch.export
ExportedProgram saved with torch.export.save (load with torch.export.load(FILE).module()).
Beside FILE a JSON sidecar (`FILE.json`) names the classes, the input layout and the parity figure. At export the
file is read back (onnxruntime, or torch.export.load) and run on a fixed batch of images
against the engine's own path (its evaluation preprocessing and the restored model); the
largest absolute difference in probability is printed, and above --tolerance the export fails.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import io
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError
from engine.score import decisions
from common.atomic import atomic_write_bytes, atomic_write_json

FORMATS = ("onnx", "torch")
SUFFIX = {"onnx": ".onnx", "torch": ".pt2"}


@dataclass
class Options:
    checkpoint: str = opt("", path=True, required=True,
                          help="run folder (or its checkpoint.pt) written by engine.train or engine.cv")
    format: str = opt("onnx", choices=FORMATS,
                      help="onnx (ONNX graph, dynamic batch) or torch (torch.export ExportedProgram, torch.export.save)")
    out: str = opt("", path=True, required=True,
                   help="file to write: .onnx for onnx, .pt2 for torch; a FILE.json sidecar is written beside it")
    parity_batch: int = opt(8, ge=1, help="images in the fixed batch the exported file is checked on against the engine")
    opset: int = opt(18, ge=7, help="ONNX opset version")
    tolerance: float = opt(1e-4, gt=0.0, help="largest allowed absolute difference in probability at the parity check")


PARITY_SEED = 20261203


class RawImageClassifier(nn.Module):
    """uint8 NHWC RGB images -> probabilities, the engine's evaluation path in one module."""

    def __init__(self, model: nn.Module, spec, decision: dict | None):
        super().__init__()
        from kernels.augment import _eval_params, affine_from_params, sampling_grid
        self.model = model
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255.0 * std))  # 1/255 folded in, as kernels/augment.py does
        self.register_buffer("shift", mean / std)
        crop = float(spec.eval_crop)
        self.crop = crop != 1.0
        grid = sampling_grid(affine_from_params(_eval_params(crop, 1, torch.device("cpu"))), spec.out_size)
        self.register_buffer("grid", grid)
        self.decision = decision  # applied by engine/score/decisions.py itself, so a change there is exported too

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        if self.crop:  # --data.eval_crop < 1: the same centre crop and bilinear resample as the loaders
            x = F.grid_sample(x, self.grid.expand(x.shape[0], -1, -1, -1), mode="bilinear",
                              padding_mode="border", align_corners=False)
        x = (x * self.scale - self.shift).contiguous(memory_format=torch.channels_last)
        return decisions.adjust(self.model(x).float().softmax(1), self.decision)


def _refuse_unexportable(restored, spec) -> None:
    if restored.cfg.model.metadata:
        raise ConfigError("engine.export: metadata-fused models take a metadata row beside the image; export "
                          "supports image-only models")
    if spec.clahe or spec.color_constancy:
        raise ConfigError("engine.export: the run uses --data.clahe or --data.color_constancy, which the exported "
                          "graph does not include; export a run trained without them")


def engine_probs(restored, spec, images: torch.Tensor) -> torch.Tensor:
    """The engine's own probabilities for uint8 NHWC `images`: its evaluation preprocessing
    (kernels.augment reference), the restored model, the stored correction."""
    from kernels.augment import DeviceAugment
    augment = DeviceAugment(spec, restored.cfg.train.seed, torch.device("cpu"), impl="reference")
    with torch.no_grad():
        logits = restored.model(augment(images.permute(0, 3, 1, 2), 0))
    return decisions.adjust(logits.float().softmax(1), restored.decision)


def parity_images(n: int, size: int) -> torch.Tensor:
    """A fixed batch: smooth colour fields with noise, so every layer sees varied values."""
    rng = np.random.default_rng(PARITY_SEED)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    base = rng.uniform(0, 255, (n, 1, 1, 3)) * ramp[None, :, None, None] + rng.uniform(0, 128, (n, 1, 1, 3))
    noisy = base + rng.normal(0, 25, (n, size, size, 3))
    return torch.from_numpy(np.clip(noisy, 0, 255).astype(np.uint8))


def _write_torch(module: nn.Module, example: torch.Tensor, out: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the archive writer's note on CPU weights, harmless here
        torch.export.save(program, buf)
    atomic_write_bytes(out, lambda fh: fh.write(buf.getvalue()))


def _write_onnx(module: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress chatter; failures raise
        program = torch.onnx.export(module, (example,), input_names=["images"], output_names=["probs"],
                                    dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True,
                                    verbose=False)
    buf = io.BytesIO(program.model_proto.SerializeToString())
    atomic_write_bytes(out, lambda fh: fh.write(buf.getvalue()))


def exported_probs(fmt: str, out: Path, images: torch.Tensor) -> np.ndarray:
    """Run the written file (read back from disk) on `images`."""
    if fmt == "torch":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the archive reader's notes on CPU weights
            return torch.export.load(str(out)).module()(images).numpy()
    import onnxruntime as ort
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"images": images.numpy()})[0]


def _checked_out(options: dict) -> Path:
    out = Path(options["out"])
    suffix = SUFFIX[options["format"]]
    if out.suffix != suffix:  # torch.export.load reads only .pt2 files
        raise ConfigError(f"engine.export: --out for --format {options['format']} must end in {suffix}; got {out}")
    if out.is_dir():
        raise ConfigError(f"engine.export: --out {out} is a folder; name the file to write")
    if not out.parent.is_dir():
        raise ConfigError(f"engine.export: --out {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):  # said before the minutes of export, not after
        raise ConfigError(f"engine.export: --out {out}: folder {out.parent} is not writable")
    return out


def export(options: dict) -> dict:
    from engine.run.restore import restore
    from loaders.base import augment_spec
    from engine.options.resolve import loader_spec
    out = _checked_out(options)
    restored = restore(options["checkpoint"], "cpu")
    size = restored.image_size
    spec = augment_spec(loader_spec(restored.cfg, size), size, train=False)
    _refuse_unexportable(restored, spec)
    module = RawImageClassifier(restored.model.float().eval(), spec, restored.decision).eval()
    images = parity_images(max(2, options["parity_batch"]), size)  # 2+: batch 1 would be specialized
    if options["format"] == "onnx":
        _write_onnx(module, images, out, options["opset"])
    else:
        _write_torch(module, images, out)
    diff = float(np.abs(exported_probs(options["format"], out, images) - engine_probs(restored, spec, images).numpy()).max())
    sidecar = {"format": options["format"], "checkpoint": str(options["checkpoint"]), "classes": restored.classes,
               "model": restored.model_name, "input": {"name": "images", "dtype": "uint8", "layout": "NHWC",
                                                       "shape": ["batch", size, size, 3], "channels": "RGB"},
               "output": {"name": "probs", "dtype": "float32", "shape": ["batch", len(restored.classes)]},
               "normalization": {"mean": list(spec.mean), "std": list(spec.std), "eval_crop": spec.eval_crop},
               "prior_correction_tau": float((restored.decision or {}).get("tau") or 0.0),
               "threshold": (restored.decision or {}).get("threshold"),
               "parity": {"images": len(images), "max_abs_diff": diff, "tolerance": options["tolerance"]}}
    atomic_write_json(Path(str(out) + ".json"), sidecar)
    print(f"export: {options['format']} -> {out} ({out.stat().st_size / 1e6:.1f} MB); parity on {len(images)} "
          f"images: max abs difference {diff:.2e} vs the engine (tolerance {options['tolerance']:g})")
    if not diff <= options["tolerance"]:
        raise ConfigError(f"engine.export: the exported model differs from the engine by {diff:.2e} "
                          f"(> --tolerance {options['tolerance']:g}); {out} is not to be trusted")
    return sidecar


def _main(argv: list[str]) -> None:
    export(asdict(parse(argv, Options, "engine.export", suggest)[0]))


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("engine.export", __doc__.strip().split("\n\n", 1)[1], Options,
                                                    line=__doc__.split("`")[1]))


if __name__ == "__main__":
    sys.exit(main())
