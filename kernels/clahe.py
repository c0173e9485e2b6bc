"""CLAHE on the device: contrast-limited adaptive histogram equalization of uint8 images.

The same algorithm as OpenCV's `createCLAHE(clipLimit, tileGridSize).apply` (the reference it
is tested against): the plane is cut into tiles (padded by reflection first when it does not
divide evenly, as OpenCV does), each tile's 256-bin histogram is clipped at
clip_limit * tile_area / 256 with the excess spread evenly and the remainder stepped across
the bins, its cumulative sum is the tile's lookup table, and every pixel blends the tables
of its four nearest tile centres bilinearly. Batched torch ops, no host syncs; in Triton it
would be the same gathers and a histogram of atomics, so torch is kept (measured in
bench/kernels.py). Colour images: `clahe_rgb` equalizes the HSV value (max of R, G, B), as
scikit-image does, and rescales R, G, B by the same factor, so hue and saturation stay and a
grey image (OCT, X-ray stored as RGB) gets exactly the per-plane result.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BINS = 256


def _tile_geometry(h: int, w: int, tiles: tuple[int, int]) -> tuple[int, int]:
    """(pad_h, pad_w) OpenCV applies: none when both divide, else up to the next multiple (+ a full
    tile on an axis that already divides)."""
    ty, tx = tiles
    if h % ty == 0 and w % tx == 0:
        return 0, 0
    return ty - h % ty, tx - w % tx


def tile_luts(planes: torch.Tensor, clip_limit: float, tiles: tuple[int, int]) -> torch.Tensor:
    """(N, ty, tx, 256) float32 lookup tables of uint8 planes (N, H, W)."""
    n, h, w = planes.shape
    ty, tx = tiles
    pad_h, pad_w = _tile_geometry(h, w, tiles)
    if pad_h >= h or pad_w >= w:
        raise ValueError(f"clahe: {h}x{w} image is too small for a {ty}x{tx} tile grid")
    src = planes
    if pad_h or pad_w:  # reflect without repeating the edge = OpenCV's BORDER_REFLECT_101
        src = F.pad(planes.unsqueeze(1).float(), (0, pad_w, 0, pad_h), mode="reflect").squeeze(1).to(torch.uint8)
    th, tw = src.shape[1] // ty, src.shape[2] // tx
    area = th * tw
    values = src.view(n, ty, th, tx, tw).permute(0, 1, 3, 2, 4).reshape(n * ty * tx, area).long()
    hist = torch.zeros(n * ty * tx, BINS, dtype=torch.int32, device=planes.device)
    hist.scatter_add_(1, values, torch.ones_like(values, dtype=torch.int32))
    if clip_limit > 0:
        limit = max(int(clip_limit * area / BINS), 1)
        excess = (hist - limit).clamp_(min=0).sum(1, keepdim=True, dtype=torch.int32)
        hist.clamp_(max=limit)
        spread = torch.div(excess, BINS, rounding_mode="floor")
        residual = excess - spread * BINS
        step = torch.div(BINS, residual.clamp(min=1), rounding_mode="floor").clamp_(min=1)
        bins = torch.arange(BINS, device=planes.device, dtype=torch.int32)
        hist += spread + ((bins % step == 0) & (bins // step < residual)).to(torch.int32)
    # float32, as OpenCV computes it, as a Python number: a tensor moved to the device per
    # batch is a copy from pageable memory that waits for the stream (a host sync).
    scale = float(np.float32(BINS - 1) / np.float32(area))
    lut = torch.round(hist.cumsum(1).float() * scale).clamp_(0, 255)
    return lut.view(n, ty, tx, BINS)


def _neighbours(size: int, tile: int, count: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel along one axis: lower tile, upper tile, weight of the upper one."""
    pos = torch.arange(size, device=device, dtype=torch.float32) * float(np.float32(1.0) / np.float32(tile)) - 0.5
    low = torch.floor(pos)
    weight = pos - low
    low = low.long()
    return low.clamp(min=0), (low + 1).clamp(max=count - 1), weight


def clahe(planes: torch.Tensor, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """uint8 (..., H, W) -> uint8, each (H, W) plane equalized on its own."""
    if planes.dtype != torch.uint8:
        raise ValueError(f"clahe expects uint8 planes; got {planes.dtype}")
    *lead, h, w = planes.shape
    x = planes.reshape(-1, h, w)
    n = x.shape[0]
    ty, tx = tiles
    lut = tile_luts(x, clip_limit, tiles).view(n, -1)
    pad_h, pad_w = _tile_geometry(h, w, tiles)
    y1, y2, ya = _neighbours(h, (h + pad_h) // ty, ty, x.device)
    x1, x2, xa = _neighbours(w, (w + pad_w) // tx, tx, x.device)
    v = x.long()

    def lookup(rows, cols):
        idx = (rows.view(-1, 1) * tx + cols.view(1, -1)) * BINS + v
        return torch.gather(lut, 1, idx.view(n, -1)).view(n, h, w)

    xa, ya = xa.view(1, 1, w), ya.view(1, h, 1)
    top = lookup(y1, x1) * (1 - xa) + lookup(y1, x2) * xa
    bottom = lookup(y2, x1) * (1 - xa) + lookup(y2, x2) * xa
    out = torch.round(top * (1 - ya) + bottom * ya).clamp_(0, 255).to(torch.uint8)
    return out.view(*lead, h, w)


def clahe_rgb(images: torch.Tensor, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """uint8 (n, 3, H, W), any memory format: CLAHE of the HSV value, hue and saturation kept."""
    value = images.amax(1)
    equalized = clahe(value, clip_limit, tiles).float().unsqueeze(1)
    value = value.float().unsqueeze(1)
    scaled = torch.where(value > 0, images.float() * equalized / value.clamp(min=1), equalized)
    return torch.round(scaled).clamp_(0, 255).to(torch.uint8)
