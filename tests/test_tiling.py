"""Tile and chunk geometry as pure functions, and the column-major RLE runs."""
import numpy as np
import pytest

from segmodel import tiling


@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 32), (333, 64, 16), (50, 64, 16), (4096, 512, 64),
                                                 (513, 512, 64), (700, 128, 0)])
def test_tiles_cover_the_image_with_the_stated_overlap(length, tile, overlap):
    starts = tiling.tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, int)
    for s in starts:
        assert 0 <= s and s + size <= length  # no tile reaches outside the image
        covered[s:s + size] += 1
    assert covered.min() >= 1
    # consecutive tiles overlap by at least `overlap` (the last one, moved back, by more)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length,chunk", [(20000, 4096), (4096, 4096), (5000, 4096), (1000, 300), (777, 512)])
def test_chunk_borders_fall_where_a_tile_ends(length, chunk):
    tile, overlap = 256 if chunk < 512 else 512, 32 if chunk < 512 else 64
    bounds = tiling.chunk_bounds(length, tile, overlap, chunk)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # no gap, no overlap
    assert all(0 < end - start <= chunk for start, end in bounds)
    starts = tiling.tile_starts(length, tile, overlap)
    for _, border in bounds[:-1]:
        straddling = [s for s in starts if s < border < s + min(tile, length)]
        assert len(straddling) == 1, border  # one tile row recomputed per border, not two


def test_tiles_touching_a_chunk_are_exactly_those_that_overlap_it():
    starts = tiling.tile_starts(1000, 128, 32)
    for a, b in tiling.chunk_bounds(1000, 128, 32, 300):
        touching = tiling.tiles_touching(1000, 128, 32, a, b)
        assert touching == [s for s in starts if max(s, a) < min(s + 128, b)]


def test_blend_weights_ramp_linearly_to_the_edges():
    w = tiling.blend_weights(10, 7, 3)
    # transcription of the rule: min(1, (distance to the nearer edge + 1) / (overlap + 1)), separable
    ramp = lambda n: np.array([min(1.0, (min(i, n - 1 - i) + 1) / 4) for i in range(n)])  # noqa: E731
    np.testing.assert_allclose(w, np.outer(ramp(10), ramp(7)), rtol=1e-6)
    assert w.min() > 0 and tiling.blend_weights(5, 5, 0).min() == 1


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


def test_geometry_edge_cases_written_out():
    with pytest.raises(ValueError, match="tile_overlap 64 must be smaller than tile_size 64"):
        tiling.tile_starts(200, 64, 64)
    assert tiling.tile_starts(30, 10, 9) == list(range(21))  # stride 1 is allowed
    assert tiling.tile_starts(64, 64, 16) == [0] and tiling.tile_starts(65, 64, 16) == [0, 1]
    # A tile that starts exactly where the chunk ends does not touch it.
    assert tiling.tiles_touching(300, 100, 20, 0, 80) == [0]
    assert tiling.tiles_touching(300, 100, 20, 80, 81) == [0, 80]
    # Borders at tile ends: ends are 100, 180, 260, 300; a chunk of 180 ends at 180 exactly.
    assert tiling.chunk_bounds(300, 100, 20, 180) == [(0, 180), (180, 300)]
    assert tiling.chunk_bounds(180, 100, 20, 180) == [(0, 180)]
    # No tile end within a chunk narrower than the stride: cut at the chunk size.
    assert tiling.chunk_bounds(100, 64, 0, 40) == [(0, 40), (40, 64), (64, 100)]


def test_blend_weights_dtype_and_small_overlaps():
    for overlap in (0, 1, 5):
        assert tiling.blend_weights(6, 7, overlap).dtype == np.float32
    w = tiling.blend_weights(5, 5, 1)
    assert w[0, 0] == 0.25 and w[0, 2] == 0.5 and w[2, 2] == 1.0


def test_column_runs_edge_cases():
    assert tiling.column_runs(np.zeros((0, 3), bool)) == [0]
    assert tiling.column_runs(np.array([[1]])) == [0, 1]
    assert tiling.column_runs(np.array([[0]])) == [1]
    assert tiling.column_runs(np.array([[3], [5]])) == [0, 2]  # any non-zero is foreground
    assert tiling.merge_runs([0, 2], [0]) == [0, 2]  # an empty strip adds nothing
    assert tiling.merge_runs([], [4, 1]) == [4, 1]


def test_tile_windows_are_every_row_start_with_every_column_start():
    assert tiling.tile_windows(100, 70, 64, 16) == [(0, 0, 64, 64), (0, 6, 64, 64), (36, 0, 64, 64), (36, 6, 64, 64)]
    assert tiling.tile_windows(20, 30, 64, 16) == [(0, 0, 20, 30)]  # smaller than a tile: one window, the image
    assert tiling.tile_windows(64, 200, 64, 0) == [(0, 0, 64, 64), (0, 64, 64, 64), (0, 128, 64, 64), (0, 136, 64, 64)]


def test_statistics_add_up_from_json_lists_and_arrays():
    empty = tiling.empty_stats(3)
    assert empty["pixels"].tolist() == [0, 0, 0] and empty["pixels"].dtype == np.int64
    assert empty["confidence"].tolist() == [0.0, 0.0, 0.0] and empty["confidence"].dtype == np.float64
    assert empty["entropy"] == 0.0 and set(empty) == {"pixels", "confidence", "entropy"}
    parts = [{"pixels": [1, 2, 3], "confidence": [0.5, 1.5, 2.0], "entropy": 0.25},
             {"pixels": np.array([10, 0, 5]), "confidence": np.array([4.0, 0.0, 1.0]), "entropy": np.float32(1.5)}]
    total = tiling.sum_stats(parts, 3)
    assert total["pixels"].tolist() == [11, 2, 8] and total["pixels"].dtype == np.int64
    assert total["confidence"].tolist() == [4.5, 1.5, 3.0] and total["entropy"] == 1.75
    assert type(total["entropy"]) is float
    assert tiling.sum_stats([], 2)["pixels"].tolist() == [0, 0]
    big = tiling.sum_stats([{"pixels": [2**40], "confidence": [0.0], "entropy": 0}] * 3, 1)
    assert big["pixels"].tolist() == [3 * 2**40]  # 64-bit counts: a huge raster does not overflow
