"""Tiling and stitching as pure functions: strips of a raster stitch to the global blend."""
import numpy as np

from segmodel import tiling


def global_blend(h, w, tile, overlap, tile_probs):
    scores = np.zeros((h, w, 3), np.float32)
    weights = np.zeros((h, w), np.float32)
    for (r, c, th, tw), p in zip(tiling.tile_windows(h, w, tile, overlap), tile_probs):
        wt = tiling.blend_weights(th, tw, overlap)
        scores[r:r + th, c:c + tw] += p * wt[..., None]
        weights[r:r + th, c:c + tw] += wt
    return tiling.resolve(scores, weights, np.ones((h, w), bool), 3)[0]


def test_strips_stitch_exactly_like_one_global_blend_with_a_position_dependent_model():
    rng = np.random.default_rng(0)
    h, w, tile, overlap = 301, 277, 64, 16
    windows = tiling.tile_windows(h, w, tile, overlap)
    probs = {(r, c): rng.dirichlet(np.ones(3), (th, tw)).astype(np.float32) for r, c, th, tw in windows}
    expected = global_blend(h, w, tile, overlap, [probs[(r, c)] for r, c, _, _ in windows])
    for strip_rows in (40, 100, 301):
        out = np.full((h, w), 77, np.uint8)
        for row0 in range(0, h, strip_rows):
            row1 = min(h, row0 + strip_rows)
            stitcher = tiling.RowStitcher(w, 3, min(tile, h), overlap, row0, row1)
            done = []
            for r in [r for r in tiling.tile_starts(h, tile, overlap) if r < row1 and r + min(tile, h) > row0]:
                done.append(stitcher.start_row(r))
                for c in tiling.tile_starts(w, tile, overlap):
                    stitcher.add(r, c, probs[(r, c)], None)
            done.append(stitcher.finish())
            for item in done:
                if item is not None:
                    first, mask, _ = item
                    out[first:first + mask.shape[0]] = mask
        np.testing.assert_array_equal(out, expected)


def test_column_strip_runs_rebuild_the_rle():
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        runs = []
        step = int(rng.integers(1, 7))
        for c in range(0, w, step):
            runs = tiling.merge_runs(runs, tiling.column_runs(m[:, c:c + step]))
        rle = mask_utils.frPyObjects({"size": [int(h), int(w)], "counts": runs}, int(h), int(w))
        assert np.array_equal(mask_utils.decode(rle), m)
