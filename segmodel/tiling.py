"""Tile and chunk geometry over a large image, the blend weights, and column-major RLE runs.

Tiles of ``tile`` pixels overlap by ``overlap``; the last tile in each direction is moved back so
it ends at the image edge (every tile of one image has the same shape, so tiles batch together,
and no tile reaches outside the image). Each tile's class probabilities are weighted by a ramp
that is 1 in the tile's centre and falls linearly over ``overlap`` pixels towards its edges, so
in an overlap the tile that sees more context dominates and there is no seam
(``segmodel.predict`` does the blending).

A large image is cut into *chunks*: rectangles of the output that can be segmented
independently. A chunk runs every tile of the image's one global tile grid that touches it, so
its pixels are exactly those of a whole-image blend; neighbouring chunks share (recompute) the
one tile row or column that straddles their border. Chunk borders sit where a tile ends, so only
one tile straddles each border.
"""
from __future__ import annotations

import numpy as np


def window_starts(length: int, size: int, stride: int) -> list:
    """Window offsets along one axis: every ``stride`` pixels, and (when the stride does not skip
    pixels) one more flush with the edge so that the whole length is covered; one window at 0
    when the length is at most ``size``. Tiles (below) and the raster job's chips both use it."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if stride <= size and starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_starts(length: int, tile: int, overlap: int) -> list:
    stride = tile - overlap
    if stride <= 0 and length > tile:
        raise ValueError(f"tile_overlap {overlap} must be smaller than tile_size {tile}")
    return window_starts(length, tile, stride)


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list:
    """[(row, col, tile_height, tile_width)] covering the image."""
    th, tw = min(tile, height), min(tile, width)
    return [(r, c, th, tw) for r in tile_starts(height, tile, overlap) for c in tile_starts(width, tile, overlap)]


def tiles_touching(length: int, tile: int, overlap: int, start: int, end: int) -> list:
    """The tile starts whose tiles overlap [start, end): every tile that contributes to it."""
    size = min(tile, length)
    return [s for s in tile_starts(length, tile, overlap) if s < end and s + size > start]


def chunk_bounds(length: int, tile: int, overlap: int, chunk: int) -> list:
    """[(start, end)] cutting [0, length) into chunks of at most ``chunk`` pixels whose borders
    fall where a tile ends (so one tile straddles each border); ``chunk`` >= ``tile``."""
    if length <= chunk:
        return [(0, length)]
    size = min(tile, length)
    ends = [s + size for s in tile_starts(length, tile, overlap)]
    bounds, start = [], 0
    while start < length:
        if start + chunk >= length:
            end = length
        else:
            fitting = [e for e in ends if start < e <= start + chunk]
            end = max(fitting) if fitting else start + chunk
        bounds.append((start, end))
        start = end
    return bounds


def blend_weights(tile_height: int, tile_width: int, overlap: int) -> np.ndarray:
    """[th, tw] float32 weights, 1 in the centre, ramping down over ``overlap`` pixels, never 0."""
    def ramp(n):
        if overlap <= 0:
            return np.ones(n, np.float32)
        i = np.arange(n, dtype=np.float32)
        return np.minimum(1.0, (np.minimum(i, n - 1 - i) + 1.0) / (overlap + 1.0))
    return np.outer(ramp(tile_height), ramp(tile_width)).astype(np.float32)


def column_runs(binary: np.ndarray) -> list:
    """COCO uncompressed-RLE counts of a [h, w] binary array in column-major order (zeros first)."""
    flat = np.asarray(binary, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def merge_runs(runs: list, more: list) -> list:
    """Concatenates two column-major run lists (both starting with a zeros run)."""
    if not runs:
        return list(more)
    runs = list(runs)
    # runs alternate zeros/ones starting with zeros; whether the last run is ones depends on parity
    last_is_ones = len(runs) % 2 == 0
    if last_is_ones:
        if more[0] == 0:  # `more` starts with ones: extend
            runs[-1] += more[1] if len(more) > 1 else 0
            return runs + list(more[2:])
        return runs + list(more)
    runs[-1] += more[0]
    return runs + list(more[1:])


def empty_stats(num_classes: int) -> dict:
    return {"pixels": np.zeros(num_classes, np.int64), "confidence": np.zeros(num_classes), "entropy": 0.0}


def sum_stats(stats_list, num_classes: int) -> dict:
    """Adds up per-row / per-chunk statistics: pixels and summed confidence per class, summed
    entropy (each a plain list or array, so they travel as JSON)."""
    total = empty_stats(num_classes)
    for stats in stats_list:
        total["pixels"] += np.asarray(stats["pixels"], np.int64)
        total["confidence"] += np.asarray(stats["confidence"], np.float64)
        total["entropy"] += float(stats["entropy"])
    return total
