"""Tiled segmentation with a real trained FCN (position-dependent: a 1x1-convolution model could
not show a seam) equals a whole-image blend of the same tiles, however the image is cut into
chunks; and the blend stays close to segmenting the whole image in one pass.

The reference is written here from the rule in docs/batch_segmentation.md (tile starts every
``tile - overlap`` pixels, the last tile moved back to the edge; separable linear ramps over
``overlap`` pixels; probabilities averaged with those weights), in float64, without calling
``segmodel.tiling``."""
import json

import numpy as np
import pytest
from PIL import Image

from segmodel.exported import register_custom_objects
from pipelines import batch_segment
from pipelines.demo_world import scenes as demo_data
from segmodel import tiling
from segmodel.exported import load_exported
from segmodel.predict import TiledSegmenter

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers

pytestmark = pytest.mark.slow  # trains, or uses the trained model (1-2 minutes)

TILE = 128  # the tiny model's training crop


def starts(length, tile, overlap):
    if length <= tile:
        return [0]
    return sorted(set(list(range(0, length - tile, tile - overlap)) + [length - tile]))


def ramp(n, overlap):
    i = np.arange(n, dtype=np.float64)
    return np.ones(n) if overlap == 0 else np.minimum(1.0, (np.minimum(i, n - 1 - i) + 1.0) / (overlap + 1.0))


def reference_probabilities(model, image, tile, overlap):
    """Whole-image blend of every tile's softmax, float64: [H, W, C]."""
    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    weight = np.outer(ramp(th, overlap), ramp(tw, overlap))
    scores, weights = None, np.zeros((h, w))
    for r in starts(h, tile, overlap):
        for c in starts(w, tile, overlap):
            logits = np.asarray(model(image[None, r:r + th, c:c + tw].astype("float32")), np.float64)[0]
            p = np.exp(logits - logits.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            if scores is None:
                scores = np.zeros((h, w, p.shape[-1]))
            scores[r:r + th, c:c + tw] += p * weight[..., None]
            weights[r:r + th, c:c + tw] += weight
    return scores / weights[..., None]


def assert_equals_blend(mask, probabilities, what):
    """Equal to the reference's argmax, except where its two best classes are within float32
    rounding of each other (the order of the additions differs)."""
    expected = probabilities.argmax(-1)
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    near_tie = (top2[..., 1] - top2[..., 0]) < 1e-4
    differ = mask != expected
    assert not (differ & ~near_tie).any(), f"{what}: {int((differ & ~near_tie).sum())} pixels differ from the blend"
    assert differ.sum() <= 3, what


class ArrayJob:
    def __init__(self, image, core=None):
        self.image, self.core = image, core

    def open(self):
        return self.image.shape[:2]

    def read(self, row, col, height, width):
        return self.image[row:row + height, col:col + width], None

    def close(self):
        pass


@pytest.fixture(scope="module")
def trained(trained_model):
    model_dir, _ = trained_model
    return model_dir, load_exported(str(model_dir))


def scene(seed, height, width):
    rng = np.random.default_rng(seed)
    image, _, _ = demo_data.scene(rng, height, width)
    return image


@pytest.mark.parametrize("height,width,overlap", [(203, 317, 32), (97, 64, 16), (260, 190, 0), (300, 300, 48)])
def test_chunked_tiling_equals_a_whole_image_blend(trained, height, width, overlap):
    _, model = trained
    image = scene(height * width, height, width)
    probabilities = reference_probabilities(model, image, TILE, overlap)
    segmenter = TiledSegmenter(model, probabilities.shape[-1], TILE, overlap, batch_size=3)
    (mask, stats, error), = segmenter.segment([ArrayJob(image)])
    assert error is None and mask.shape == (height, width)
    assert_equals_blend(mask, probabilities, "whole image")
    valid = height * width
    assert stats["pixels"].sum() == valid
    assert np.isclose(stats["confidence"].sum() / valid, probabilities.max(-1).mean(), rtol=1e-4)
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-12, 1))).sum(-1).mean()
    assert np.isclose(stats["entropy"] / valid, entropy, rtol=1e-3)
    # The same image cut into chunks in both directions (every chunk a separate job, pooled
    # into the same model calls), put back together.
    for chunk in (TILE, TILE + 40, 2 * TILE):
        jobs = [ArrayJob(image, (r0, r1, c0, c1))
                for r0, r1 in tiling.chunk_bounds(height, TILE, overlap, chunk)
                for c0, c1 in tiling.chunk_bounds(width, TILE, overlap, chunk)]
        assembled = np.full((height, width), 77, np.uint8)
        for job, (part, _, part_error) in zip(jobs, segmenter.segment(jobs)):
            assert part_error is None
            r0, r1, c0, c1 = job.core
            assembled[r0:r1, c0:c1] = part
        assert_equals_blend(assembled, probabilities, f"{len(jobs)} chunks of {chunk}")


def test_blend_disagrees_with_one_whole_pass_only_near_tile_edges(trained):
    """Tiles see less context than the whole image; the ramps keep the difference small and
    near the edges of tiles."""
    _, model = trained
    height, width, overlap = 320, 448, 32
    image = scene(5, height, width)
    segmenter = TiledSegmenter(model, 4, TILE, overlap, batch_size=4)
    (mask, _, _), = segmenter.segment([ArrayJob(image)])
    whole = np.asarray(model(image[None].astype("float32"))).argmax(-1)[0]
    differ = mask != whole
    near_edge = np.zeros((height, width), bool)
    for r in starts(height, TILE, overlap):
        for c in starts(width, TILE, overlap):
            for edge in (r, r + TILE):
                near_edge[max(0, edge - overlap):edge + overlap, c:c + TILE] = True
            for edge in (c, c + TILE):
                near_edge[r:r + TILE, max(0, edge - overlap):edge + overlap] = True
    print(f"tiled vs one pass: {differ.mean():.4%} of pixels differ, "
          f"{(differ & near_edge).sum() / max(differ.sum(), 1):.0%} of them within {overlap} px of a tile edge")
    assert differ.mean() < 0.05
    assert (differ & ~near_edge).mean() < 0.002


def test_geotiff_in_a_grid_of_chunks_equals_the_whole_image_blend(trained, tmp_path):
    import rasterio
    from rasterio.transform import from_origin
    model_dir, model = trained
    height, width, overlap = 290, 371, 32
    image = scene(11, height, width)
    inputs = tmp_path / "in"
    inputs.mkdir()
    with rasterio.open(inputs / "scene.tif", "w", driver="GTiff", width=width, height=height, count=3,
                       dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10),
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(image.transpose(2, 0, 1))
    out = tmp_path / "out"
    result = batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.tif", "--output_dir", str(out),
                                "--tile_size", str(TILE), "--tile_overlap", str(overlap), "--chunk_size", "150",
                                "--batch_size", "5"])
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["chunks"] >= 9  # at least 3 x 3
    with rasterio.open(out / "masks/scene.tif") as src:
        mask = src.read(1)
    assert_equals_blend(mask, reference_probabilities(model, image, TILE, overlap), "GeoTIFF chunks")
    record = json.loads((out / "masks/scene.json").read_text())
    assert record["height"] == height and record["width"] == width
    assert not list((out / ".parts").rglob("*.tif"))


def test_photo_through_the_pipeline_equals_the_whole_image_blend(trained, tmp_path):
    model_dir, model = trained
    image = scene(12, 211, 389)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in/photo.png")
    batch_segment.run(["--model", str(model_dir), "--input", f"{tmp_path}/in/*", "--output_dir",
                       str(tmp_path / "out"), "--tile_size", str(TILE), "--tile_overlap", "24"])
    mask = np.asarray(Image.open(tmp_path / "out/masks/photo.png"))
    assert_equals_blend(mask, reference_probabilities(model, image, TILE, 24), "photo")
