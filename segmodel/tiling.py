"""Windows over a large image and the blending that stitches per-tile scores back seamlessly.

Tiles of ``tile`` pixels overlap by ``overlap``; the last tile in each direction is moved back so
it ends at the image edge (every tile of one image has the same shape, so tiles batch together,
and no tile reaches outside the image). Each tile's class probabilities are weighted by a ramp
that is 1 in the tile's centre and falls linearly over ``overlap`` pixels towards its edges, so
in an overlap the tile that sees more context dominates and there is no seam. The output is cut
into ``block`` x ``block`` blocks that can be stitched independently (and in parallel).
"""
from __future__ import annotations

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list:
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile_overlap {overlap} must be smaller than tile_size {tile}")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list:
    """[(row, col, tile_height, tile_width)] covering the image."""
    th, tw = min(tile, height), min(tile, width)
    return [(r, c, th, tw) for r in tile_starts(height, tile, overlap) for c in tile_starts(width, tile, overlap)]


def blend_weights(tile_height: int, tile_width: int, overlap: int) -> np.ndarray:
    """[th, tw] float32 weights, 1 in the centre, ramping down over ``overlap`` pixels, never 0."""
    def ramp(n):
        if overlap <= 0:
            return np.ones(n, np.float32)
        i = np.arange(n, dtype=np.float32)
        return np.minimum(1.0, (np.minimum(i, n - 1 - i) + 1.0) / (overlap + 1.0))
    return np.outer(ramp(tile_height), ramp(tile_width)).astype(np.float32)


def blocks_of_window(row: int, col: int, th: int, tw: int, block: int):
    """Yields (block_row, block_col, window-relative slice, block-relative slice) for every output
    block the window intersects."""
    for br in range(row // block, (row + th - 1) // block + 1):
        for bc in range(col // block, (col + tw - 1) // block + 1):
            r0, r1 = max(row, br * block), min(row + th, (br + 1) * block)
            c0, c1 = max(col, bc * block), min(col + tw, (bc + 1) * block)
            yield (br, bc, (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)),
                   (slice(r0 - br * block, r1 - br * block), slice(c0 - bc * block, c1 - bc * block)))


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


def sum_stats(stats_list, num_classes: int) -> dict:
    """Adds up the per-block / per-strip statistics that ``resolve`` returns."""
    total = {"pixels": np.zeros(num_classes, np.int64), "confidence": np.zeros(num_classes), "entropy": 0.0}
    for stats in stats_list:
        total["pixels"] += stats["pixels"]
        total["confidence"] += stats["confidence"]
        total["entropy"] += stats["entropy"]
    return total


def resolve(scores: np.ndarray, weights: np.ndarray, valid: np.ndarray, num_classes: int):
    """Blended scores -> (class mask uint8 with 255 where invalid, per-class stats dict)."""
    probabilities = scores / np.maximum(weights, 1e-12)[..., None]
    mask = probabilities.argmax(-1).astype(np.uint8)
    confidence = probabilities.max(-1)
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))).sum(-1)
    mask[~valid] = 255
    classes = mask[valid].astype(np.int64)
    stats = {
        "pixels": np.bincount(classes, minlength=num_classes).astype(np.int64),
        "confidence": np.bincount(classes, weights=confidence[valid], minlength=num_classes),
        "entropy": float(entropy[valid].sum()),
    }
    return mask, stats


RESOLVE_COLUMNS = 2048


class RowStitcher:
    """Blends tile rows of one horizontal strip into final mask rows, keeping only one tile
    height of scores in memory whatever the raster's height.

    Tile rows must be added top to bottom (``start_row`` then ``add`` per tile); rows above a new
    tile row's start can receive no further contributions, so they are resolved and returned.
    Only rows in ``[row0, row1)`` (the strip this stitcher owns) are returned.
    """

    def __init__(self, width: int, num_classes: int, tile_height: int, overlap: int, row0: int, row1: int):
        # one tile height: when a tile row starts, the rows above it are resolved and dropped, so the
        # buffer holds exactly the new tile row (whose top rows carry the previous row's overlap)
        self.capacity = tile_height
        self.scores = np.zeros((self.capacity, width, num_classes), np.float32)
        self.weights = np.zeros((self.capacity, width), np.float32)
        self.valid = np.ones((self.capacity, width), bool)
        self.num_classes, self.overlap, self.row0, self.row1 = num_classes, overlap, row0, row1
        self.base = None

    def _resolve(self, upto: int):
        """Resolves buffered rows [base, upto) and shifts the buffer to start at ``upto``."""
        start, end = max(self.base, self.row0), min(upto, self.row1)
        out = None
        if end > start:
            a, b = start - self.base, end - self.base
            # resolved RESOLVE_COLUMNS at a time: resolve's float temporaries (probabilities,
            # their log, int64 classes) for a full 16384-wide band of rows were a ~400 MB spike
            width = self.scores.shape[1]
            parts = [resolve(self.scores[a:b, c:c + RESOLVE_COLUMNS], self.weights[a:b, c:c + RESOLVE_COLUMNS],
                             self.valid[a:b, c:c + RESOLVE_COLUMNS], self.num_classes)
                     for c in range(0, width, RESOLVE_COLUMNS)]
            out = (start, np.concatenate([mask for mask, _ in parts], axis=1),
                   sum_stats([stats for _, stats in parts], self.num_classes))
        shift = upto - self.base
        for buffer, fill in ((self.scores, 0), (self.weights, 0), (self.valid, True)):
            if shift >= self.capacity:
                buffer[:] = fill
            elif shift > 0:
                buffer[:-shift] = buffer[shift:].copy()
                buffer[-shift:] = fill
        self.base = upto
        return out

    def start_row(self, row: int):
        """Starts tile row ``row``; returns (first_row, mask, stats) of rows now final, or None."""
        if self.base is None:
            self.base = row
            return None
        return self._resolve(row)

    def add(self, row: int, col: int, probabilities: np.ndarray, valid: np.ndarray | None):
        th, tw = probabilities.shape[:2]
        w = blend_weights(th, tw, self.overlap)
        r = row - self.base
        self.scores[r:r + th, col:col + tw] += probabilities * w[..., None]
        self.weights[r:r + th, col:col + tw] += w
        if valid is not None:
            self.valid[r:r + th, col:col + tw] = valid

    def finish(self):
        return self._resolve(self.base + self.capacity)
