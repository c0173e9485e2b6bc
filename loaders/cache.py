"""The folder for files the data layer derives once and reuses (synthetic JPEGs, FFCV .betons):
the project's one cache root (common/cache.py)."""
from __future__ import annotations

from common.cache import cache_root  # noqa: F401  (loaders name it here)
