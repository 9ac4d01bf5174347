"""batch_segment end to end with real components: a real Keras model, real files, real GCS emulator."""
import json
import shutil
import warnings

import keras
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segmodel.exported import register_custom_objects
from pipelines import batch_segment, coco_to_tfrecord
from pipelines.common import palette
from segmodel import fcn, layers, tiling
from tests.helpers import (POINTWISE_NAMES as NAMES, dataflow_args, make_pointwise_model, read_records,
                           staged_pipeline_transforms, upload_tree)

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers

@pytest.fixture(scope="module")
def pointwise_model(tmp_path_factory):
    return make_pointwise_model(tmp_path_factory.mktemp("pointwise"))


def random_image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = coarse.repeat(8, 0).repeat(8, 1)[:h, :w]
    Image.fromarray(image).save(path)
    return image


def segment(model_dir, pattern, out, *extra):
    return batch_segment.run(["--model", str(model_dir), "--input", str(pattern), "--output_dir", str(out), *extra])


def test_masks_match_a_single_pass_on_odd_tiny_and_multi_tile_images(pointwise_model, tmp_path):
    model_dir, model = pointwise_model
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    images = {"odd": random_image(inputs / "odd.png", 333, 257, 0),
              "tiny": random_image(inputs / "tiny.png", 7, 10, 1),
              "nested/wide": random_image(inputs / "nested/wide.png", 90, 301, 2)}
    segment(model_dir, f"{inputs}/**", tmp_path / "out", "--tile_size", "64", "--tile_overlap", "16",
            "--batch_size", "5")
    for rel, image in images.items():
        mask = np.asarray(Image.open(tmp_path / "out/masks" / f"{rel}.png"))
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        single_pass = np.asarray(model(image[None].astype("float32"))).argmax(-1)[0]
        assert np.array_equal(mask, single_pass), rel
    summary = [json.loads(line) for line in (tmp_path / "out/summary.jsonl").read_text().splitlines()]
    assert len(summary) == 3
    assert [s["review_priority"] for s in summary] == sorted((s["review_priority"] for s in summary), reverse=True)
    for line in summary:
        assert set(line) == {"input", "mask", "height", "width", "class_fraction", "mean_confidence",
                             "review_priority"}
        assert abs(sum(line["class_fraction"].values()) - 1) < 1e-6 and 0 < line["mean_confidence"] <= 1
    assert (tmp_path / "out/errors.jsonl").read_text() == ""


def test_blending_is_seamless_for_position_dependent_models():
    """Blend weights never vanish and the tiles cover every pixel."""
    windows = tiling.tile_windows(1000, 777, 256, 32)
    covered = np.zeros((1000, 777))
    for r, c, th, tw in windows:
        covered[r:r + th, c:c + tw] += tiling.blend_weights(th, tw, 32)
    assert covered.min() > 0


def test_labels_coco_decode_to_the_masks_and_round_trip_through_coco_to_tfrecord(pointwise_model, tmp_path):
    model_dir, _ = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        random_image(inputs / f"img{k}.png", 40 + 9 * k, 70 - 5 * k, 10 + k)
    out = tmp_path / "out"
    segment(model_dir, f"{inputs}/*.png", out, "--tile_size", "32", "--tile_overlap", "8", "--overlays")
    coco = COCO(str(out / "labels_coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == NAMES[1:]
    for image_id, info in coco.imgs.items():
        mask = np.asarray(Image.open(out / "masks" / info["file_name"].replace(".png", ".png")))
        rebuilt = np.zeros_like(mask)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            decoded = coco.annToMask(ann).astype(bool)
            assert ann["area"] == decoded.sum() and 0 < ann["score"] <= 1 and ann["iscrowd"] == 0
            rebuilt[decoded] = ann["category_id"]
        assert np.array_equal(rebuilt, mask)
        assert (out / "overlays" / info["file_name"].replace(".png", ".jpg")).exists()
    coco_to_tfrecord.run(["--annotations", str(out / "labels_coco.json"), "--images", str(inputs),
                          "--output_dir", str(tmp_path / "records")])
    records = read_records(str(tmp_path / "records/train-*.tfrecord"))
    assert len(records) == 3
    for image_id, info in coco.imgs.items():
        assert np.array_equal(records[str(image_id)]["mask"],
                              np.asarray(Image.open(out / "masks" / info["file_name"])))


def test_geotiff_keeps_crs_transform_and_nodata(pointwise_model, tmp_path, testdata):
    import rasterio
    model_dir, model = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(testdata / "geotiff/RGB.byte.tif", inputs / "landsat.tif")
    # Chunks of at most 300 px: a 3 x 3 grid whose tile rows and columns overlap their
    # neighbours' must still stitch into exactly the single-pass result.
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "out", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "300")
    assert not list((tmp_path / "out/.parts").rglob("*.tif"))  # parts are cleaned up
    from rio_cogeo.cogeo import cog_validate  # a real COG validator, not the code's own idea of one
    valid, errors, _ = cog_validate(str(tmp_path / "out/masks/landsat.tif"))
    assert valid and not errors, errors
    with rasterio.open(testdata / "geotiff/RGB.byte.tif") as src, \
            rasterio.open(tmp_path / "out/masks/landsat.tif") as dst:
        assert (dst.width, dst.height) == (src.width, src.height) == (791, 718)
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.count == 1 and dst.dtypes[0] == "uint8" and dst.nodata == 255
        assert dst.profile.get("compress", "").lower() == "deflate" and dst.profile.get("tiled")
        assert dst.colormap(1)[1][:3] == palette.class_color(1)
        mask = dst.read(1)
        image = src.read().transpose(1, 2, 0)
        nodata = src.dataset_mask() == 0
    assert np.all(mask[nodata] == 255) and nodata.any()
    expected = np.asarray(model(image[None].astype("float32"))).argmax(-1)[0]
    assert np.array_equal(mask[~nodata], expected[~nodata])
    summary = json.loads((tmp_path / "out/summary.jsonl").read_text())
    assert summary["mask"].endswith("masks/landsat.tif") and summary["height"] == 718


def test_skip_existing_and_error_records(pointwise_model, tmp_path):
    model_dir, _ = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        random_image(inputs / f"img{k}.png", 30, 40, k)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    first = segment(model_dir, f"{inputs}/*.png", out, "--tile_size", "32")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["source"].rsplit("/", 1)[-1], e["reason"]) for e in errors] == [("broken.png", "corrupt_image")]
    (out / "masks/img1.png").unlink()
    before = (out / "masks/img0.png").stat().st_mtime_ns
    result = segment(model_dir, f"{inputs}/*.png", out, "--tile_size", "32", "--skip_existing")
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters.get("images_skipped") == 2 and counters.get("images_segmented") == 1
    assert (out / "masks/img0.png").stat().st_mtime_ns == before and (out / "masks/img1.png").exists()
    assert len((out / "summary.jsonl").read_text().splitlines()) == 3
    assert len(json.loads((out / "labels_coco.json").read_text())["images"]) == 3
    del first


def test_gcs_model_inputs_and_outputs_through_the_emulator(pointwise_model, tmp_path, gcs_bucket):
    from apache_beam.io.filesystems import FileSystems
    model_dir, model = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = random_image(inputs / "a.png", 50, 60, 5)
    import rasterio
    from rasterio.transform import from_origin
    with rasterio.open(inputs / "r.tif", "w", driver="GTiff", width=60, height=50, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(10, 50, 0.1, 0.1), tiled=True, blockxsize=16,
                       blockysize=16) as dst:
        dst.write(image.transpose(2, 0, 1))
    prefix = f"gs://{gcs_bucket}/segment"
    upload_tree(inputs, f"{prefix}/in")
    upload_tree(model_dir, f"{prefix}/model")
    segment(f"{prefix}/model", f"{prefix}/in/*", f"{prefix}/out", "--tile_size", "32", "--chunk_size", "32")
    expected = np.asarray(model(image[None].astype("float32"))).argmax(-1)[0]
    with FileSystems.open(f"{prefix}/out/masks/a.png") as handle:
        import io
        mask = np.asarray(Image.open(io.BytesIO(handle.read())))
    assert np.array_equal(mask, expected)
    with FileSystems.open(f"{prefix}/out/masks/r.tif") as handle:
        (tmp_path / "r_mask.tif").write_bytes(handle.read())
    with rasterio.open(tmp_path / "r_mask.tif") as src:  # read remotely window by window, written back
        assert np.array_equal(src.read(1), expected) and src.crs.to_epsg() == 4326
    assert FileSystems.exists(f"{prefix}/out/labels_coco.json") and FileSystems.exists(f"{prefix}/out/summary.jsonl")


def test_batch_segment_dataflow_job_builds_offline(pointwise_model, tmp_path, gcs_bucket):
    model_dir, _ = pointwise_model
    upload_tree(model_dir, f"gs://{gcs_bucket}/df-model")
    batch_segment.run(["--model", f"gs://{gcs_bucket}/df-model", "--input", f"gs://{gcs_bucket}/tiles/*.tif",
                       "--output_dir", f"gs://{gcs_bucket}/df-out", *dataflow_args(gcs_bucket, tmp_path)])
    names = staged_pipeline_transforms(tmp_path / "template.json")
    assert {"SegmentInputs", "Assemble", "WriteRecords", "WriteErrors"} <= {n.split("/")[0] for n in names}


def test_bfloat16_precision_is_used_and_keeps_almost_every_pixel(pointwise_model, tmp_path):
    model_dir, model = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = random_image(inputs / "a.png", 120, 90, 21)
    confidence = {}
    for precision in ("float32", "bfloat16"):
        segment(model_dir, f"{inputs}/*.png", tmp_path / precision, "--tile_size", "64", "--precision", precision)
        confidence[precision] = json.loads((tmp_path / precision / "summary.jsonl").read_text())["mean_confidence"]
    mask = np.asarray(Image.open(tmp_path / "bfloat16/masks/a.png"))
    fp32 = np.asarray(model(image[None].astype("float32"))).argmax(-1)[0]
    assert mask.shape == fp32.shape and np.mean(mask != fp32) <= 0.01
    # bfloat16 keeps 8 bits of mantissa: the probabilities, and so the mean confidence, move
    # (a pipeline that ignored the flag would give float32's value to the last digit).
    assert abs(confidence["bfloat16"] - confidence["float32"]) > 1e-5, confidence
    bf16 = fcn.with_precision(model, "bfloat16")
    assert bf16.get_layer(index=-1).compute_dtype == "float32" and any(
        layer.compute_dtype == "bfloat16" for layer in bf16.layers)


def test_only_small_descriptions_cross_a_shuffle(pointwise_model, tmp_path, testdata):
    """What goes through every GroupByKey (Reshuffle, the raster parts, the file sinks) stays
    under 64 KB per input, for photos and for a GeoTIFF cut into a grid of chunks, with --scores
and --vectors:
    no pixels, no scores (a 512 x 512 tile of 4-class float32 scores alone is 4 MB)."""
    from tests.shuffle_bytes import counting_shuffles, shuffle_bytes
    model_dir, _ = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        random_image(inputs / f"photo{k}.png", 768, 1024, 30 + k)
    shutil.copy(testdata / "geotiff/RGB.byte.tif", inputs / "landsat.tif")
    for pattern, inputs_count, pixels in ((f"{inputs}/*.png", 3, 3 * 768 * 1024), (f"{inputs}/*.tif", 1, 791 * 718)):
        with counting_shuffles():
            result = segment(model_dir, pattern, tmp_path / f"out{inputs_count}", "--tile_size", "128",
                             "--tile_overlap", "16", "--chunk_size", "256", "--scores", "all", "--vectors")
        sizes = shuffle_bytes(result)
        counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
        assert counters["images_segmented"] == inputs_count
        assert any("Spread" in name for name in sizes) and any("WriteRecords" in name for name in sizes), sizes
        if inputs_count == 1:
            assert counters["chunks"] >= 9 and any("GroupParts" in name for name in sizes), sizes
        total = sum(sizes.values())
        print(f"{pattern}: {total / inputs_count:.0f} bytes per input through shuffles, "
              f"{total / pixels:.4f} per input pixel: {sizes}")
        assert total / inputs_count <= 64 * 1024, sizes


def test_segment_inputs_transform_with_test_pipeline(pointwise_model, tmp_path):
    """SegmentInputs on Beam's TestPipeline, checked with assert_that; and run() on a given
    test_pipeline (Beam's testing convention for entry points)."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    import apache_beam as beam
    model_dir, _ = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    random_image(inputs / "a.png", 40, 50, 1)
    random_image(inputs / "b.png", 70, 30, 2)
    (inputs / "c.png").write_bytes(b"not a png")
    config = batch_segment.SegmentConfig(model=str(model_dir), output_dir=str(tmp_path / "out"),
                                         class_names=tuple(NAMES), tile_size=32)
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        out = (p | beam.Create(sorted(str(f) for f in inputs.iterdir()))
               | batch_segment.SegmentInputs(config, f"{inputs}/"))
        assert_that(out["records"] | beam.Map(lambda r: (r["file_name"], r["height"], r["width"])),
                    equal_to([("a.png", 40, 50), ("b.png", 70, 30)]), label="Records")
        assert_that(out["errors"] | beam.Map(lambda e: (e["source"].rsplit("/", 1)[-1], e["reason"])),
                    equal_to([("c.png", "corrupt_image")]), label="Errors")
    result = batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir",
                                str(tmp_path / "run"), "--tile_size", "32"],
                               test_pipeline=TestPipeline(runner=fn_runner.FnApiRunner()))
    assert result.state == "DONE" and len((tmp_path / "run/summary.jsonl").read_text().splitlines()) == 2


def test_bad_settings_are_one_clear_line(pointwise_model, tmp_path):
    model_dir, _ = pointwise_model
    with pytest.raises(SystemExit, match="tile_overlap must be in"):
        segment(model_dir, f"{tmp_path}/*.png", tmp_path / "out", "--tile_size", "64", "--tile_overlap", "64")
    with pytest.raises(SystemExit, match="chunk_size .* must be at least tile_size"):
        segment(model_dir, f"{tmp_path}/*.png", tmp_path / "out", "--chunk_size", "100")


def test_an_output_folder_the_input_glob_would_read_is_refused(pointwise_model, tmp_path):
    from pipelines.common.images import output_inside_input
    model_dir, _ = pointwise_model
    assert output_inside_input("in/seg", "in/**")
    assert output_inside_input("in/seg", "in/*/*/*.png")  # in/seg/masks/x.png
    assert not output_inside_input("in/seg", "in/*.png")  # * stays within a folder
    assert not output_inside_input("out", "in/**")
    with pytest.raises(SystemExit, match="re-run would segment its own masks"):
        segment(model_dir, f"{tmp_path}/**", tmp_path / "seg")


@pytest.mark.parametrize("dtype,nodata", [("uint16", None), ("float32", float("nan"))])
def test_non_8bit_geotiffs_are_stretched_per_band_with_chosen_bands(tmp_path, dtype, nodata):
    """A 4-band 16-bit (or float with NaN nodata) raster, --bands 3,1,2: each chosen band is
    stretched between its 2nd and 98th percentile (computed here with NumPy over the whole band;
    the data is constant in 16-pixel blocks, so the job's decimated read sees the same values)."""
    import rasterio
    from rasterio.transform import from_origin
    # Class k = the brightest of the three bands shown to the model: the band order shows.
    images = keras.Input((None, None, 3))
    model = keras.Model(images, keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(
        np.eye(3, dtype="float32")[None, None]))(images))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    fcn.export_model(model, str(model_dir / "model.keras"))
    (model_dir / "classes.json").write_text(json.dumps(
        {"ignore_index": 255, "classes": [{"index": i, "name": n} for i, n in enumerate(["r", "g", "b"])]}))
    rng = np.random.default_rng(7)
    h, w = 96, 160
    blocks = rng.uniform(0, 1, (4, h // 16, w // 16))
    scale = {"uint16": (300, 40000), "float32": (-0.2, 0.9)}[dtype]
    bands = (scale[0] + blocks * (scale[1] - scale[0])).repeat(16, 1).repeat(16, 2).astype(dtype)
    if nodata is not None:
        bands[:, :16, :32] = np.nan  # one nodata corner
    inputs = tmp_path / "in"
    inputs.mkdir()
    with rasterio.open(inputs / "scene.tif", "w", driver="GTiff", width=w, height=h, count=4, dtype=dtype,
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10), nodata=nodata) as dst:
        dst.write(bands)
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "out", "--tile_size", "64", "--tile_overlap", "16",
            "--bands", "3,1,2", "--chunk_size", "64")
    chosen = bands[[2, 0, 1]].astype(np.float64)
    valid = np.isfinite(chosen).all(0)
    stretched = np.zeros((h, w, 3), np.uint8)
    for k in range(3):
        low, high = np.percentile(chosen[k][valid], [2, 98])
        stretched[..., k] = np.clip((np.nan_to_num(chosen[k]) - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    expected = np.asarray(model(stretched[None].astype("float32"))).argmax(-1)[0]
    with rasterio.open(tmp_path / "out/masks/scene.tif") as src:
        mask = src.read(1)
    assert len(np.unique(expected[valid])) == 3
    assert np.array_equal(mask[valid], expected[valid])
    assert np.all(mask[~valid] == 255) and (~valid).sum() == (0 if nodata is None else 16 * 32)


def test_a_mask_that_cannot_be_written_is_an_error_record_and_the_rest_go_on(pointwise_model, tmp_path):
    model_dir, _ = pointwise_model
    for k, folder in enumerate(("a", "b", "a")):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        random_image(tmp_path / "in" / folder / f"img{k}.png", 30, 40, k)
    (tmp_path / "out/masks").mkdir(parents=True)
    (tmp_path / "out/masks/b").write_text("a file where the folder for b's masks must go")
    result = segment(model_dir, f"{tmp_path}/in/**", tmp_path / "out", "--tile_size", "32")
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    assert [(e["source"].rsplit("/", 1)[-1], e["reason"]) for e in errors] == [("img1.png", "write_failed")]
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["images_segmented"] == 2 and counters["images_rejected/write_failed"] == 1
    assert (tmp_path / "out/masks/a/img0.png").is_file() and (tmp_path / "out/masks/a/img2.png").is_file()


@pytest.mark.slow  # a 2048^2 raster through the GCS emulator
def test_a_remote_raster_is_read_window_by_window(pointwise_model, tmp_path, gcs_bucket, monkeypatch):
    """A 2048 x 2048 tiled GeoTIFF on gs:// cut into 16 chunks: each chunk's reader fetches a
    fraction of the file (ranged reads through Beam's seekable gs:// files; a chunk reads its
    tiles' windows, rounded out to the file's 256-pixel blocks), never the whole of it, and the
    mask still equals one pass of the model."""
    import rasterio
    from rasterio.transform import from_origin

    from pipelines.common import rasters
    model_dir, model = pointwise_model
    size = 2048
    image = np.random.default_rng(4).integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
    image = image.repeat(32, 0).repeat(32, 1)
    local = tmp_path / "big.tif"
    with rasterio.open(local, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(0, 0, 1, 1), tiled=True, blockxsize=256,
                       blockysize=256) as dst:  # uncompressed: bytes read track pixels read
        dst.write(image.transpose(2, 0, 1))
    prefix = f"gs://{gcs_bucket}/ranged"
    upload_tree(model_dir, f"{prefix}/model")
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(f"{prefix}/in/big.tif") as handle:
        handle.write(local.read_bytes())
    fetched = []  # bytes read through each opened remote file object
    opener = rasters._beam_opener

    def counting_opener(path, mode="rb"):
        handle = opener(path, mode)
        index = len(fetched)
        fetched.append(0)
        read = handle.read

        def counted(*args):
            data = read(*args)
            fetched[index] += len(data)
            return data
        handle.read = counted
        return handle

    monkeypatch.setattr(rasters, "_beam_opener", counting_opener)
    segment(f"{prefix}/model", f"{prefix}/in/*.tif", tmp_path / "out", "--tile_size", "256", "--tile_overlap", "16",
            "--chunk_size", "512")
    file_size = local.stat().st_size
    # A chunk of 512 reads its core, 16 px before and 240 px after it in each direction (the
    # tiles on its borders), rounded out to 256-px blocks: here at most ~37 % of the file each.
    assert len(fetched) >= 16 and max(fetched) < 0.4 * file_size, (file_size, sorted(fetched))
    with rasterio.open(tmp_path / "out/masks/big.tif") as src:
        mask = src.read(1)
    assert np.array_equal(mask, np.asarray(model(image[None].astype("float32"))).argmax(-1)[0])


def averaged_read(bands, valid, shape):
    """bands [h, w, C] (invalid where ``valid`` is False) decimated to ``shape`` by GDAL's
    averaging read, from an in-memory GeoTIFF without overviews: a COG overview's reference."""
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no georeferencing
        with MemoryFile() as memory, memory.open(driver="GTiff", height=bands.shape[0], width=bands.shape[1],
                                                 count=bands.shape[2], dtype="uint8") as plain:
            plain.write(bands.transpose(2, 0, 1).astype(np.uint8))
            plain.write_mask(np.where(valid, 255, 0).astype(np.uint8))
            return plain.read(out_shape=(bands.shape[2], *shape), resampling=Resampling.average, masked=True)


def test_scores_are_the_top_class_probability_and_chunks_stitch_into_one_cog(pointwise_model, tmp_path, testdata):
    """--scores: OUT/scores/REL.png for a photo, a COG for a GeoTIFF (the input's grid, 0 where it
    is nodata); a raster cut into a grid of chunks gives the scores of one whole pass. --scores
    all: also OUT/probabilities/REL.tif, every class's probability, nodata in the dataset mask."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate
    model_dir, model = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = random_image(inputs / "photo.png", 90, 130, 7)
    shutil.copy(testdata / "geotiff/RGB.byte.tif", inputs / "landsat.tif")
    segment(model_dir, f"{inputs}/*", tmp_path / "chunked", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "300", "--scores", "all")
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "whole", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "4096", "--scores")
    assert not (tmp_path / "whole/probabilities").exists()  # --scores alone: the top class only
    # the photo (one tile): the model's own softmax, x 255, rounded
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model(image[None].astype("float32")), axis=-1))[0]
    scores = np.asarray(Image.open(tmp_path / "chunked/scores/photo.png"))
    assert scores.dtype == np.uint8 and scores.shape == image.shape[:2]
    assert np.abs(scores.astype(int) - np.round(probabilities.max(-1) * 255)).max() <= 1
    assert not list((tmp_path / "chunked/.parts").rglob("*.tif"))  # mask and scores parts cleaned up
    valid, errors, _ = cog_validate(str(tmp_path / "chunked/scores/landsat.tif"))
    assert valid and not errors, errors
    with rasterio.open(testdata / "geotiff/RGB.byte.tif") as src, \
            rasterio.open(tmp_path / "chunked/scores/landsat.tif") as chunked, \
            rasterio.open(tmp_path / "whole/scores/landsat.tif") as whole:
        assert chunked.crs == src.crs and chunked.transform == src.transform and chunked.nodata == 0
        nodata = src.dataset_mask() == 0
        a, b = chunked.read(1).astype(int), whole.read(1).astype(int)
        image = src.read().transpose(1, 2, 0)
    assert nodata.any() and np.all(a[nodata] == 0) and np.all(a[~nodata] >= 1)
    assert np.abs(a - b).max() <= 1  # float32 sums in another order, then rounded
    softmax = keras.ops.convert_to_numpy(keras.ops.softmax(model(image[None].astype("float32")), axis=-1))[0]
    top = softmax.max(-1)
    assert np.abs(a[~nodata] - np.round(top[~nodata] * 255)).max() <= 1  # a pointwise model: blending changes nothing
    # the overviews: the scores' first one is their average (GDAL's decimating read of the full
    # resolution, nodata left out, from a file without overviews)
    with rasterio.open(tmp_path / "chunked/scores/landsat.tif", overview_level=0) as overview:
        coarse = overview.read()
    average = averaged_read(a[..., None], ~nodata, coarse.shape[1:])
    assert (~average.mask).sum() > 50_000 and np.abs(coarse.astype(int) - average.filled(0)).max() <= 1
    # --scores all: a band per class named by it, the model's softmax x 255, the input's nodata in the mask
    for name in ("landsat", "photo"):
        valid, errors, _ = cog_validate(str(tmp_path / f"chunked/probabilities/{name}.tif"))
        assert valid and not errors, (name, errors)
    with rasterio.open(tmp_path / "chunked/probabilities/landsat.tif") as src:
        assert src.count == len(NAMES) and src.descriptions == tuple(NAMES) and src.nodata is None
        assert src.crs == chunked.crs and src.transform == chunked.transform
        probabilities, valid = src.read().transpose(1, 2, 0).astype(int), src.dataset_mask() > 0
    assert np.array_equal(valid, ~nodata)
    assert np.abs(probabilities[valid] - np.round(softmax[valid] * 255)).max() <= 1
    assert np.abs(probabilities.max(-1)[valid] - a[valid]).max() <= 1  # the top-class scores: the largest band
    assert np.all(probabilities[~valid] == 0)
    with rasterio.open(tmp_path / "chunked/probabilities/landsat.tif", overview_level=0) as overview:
        coarse = overview.read()
    average = averaged_read(probabilities, valid, coarse.shape[1:])
    assert np.abs(coarse.astype(int) - average.filled(0))[~average.mask].max() <= 1
    photo_softmax = keras.ops.convert_to_numpy(keras.ops.softmax(model(
        np.asarray(Image.open(inputs / "photo.png"))[None].astype("float32")), axis=-1))[0]
    with rasterio.open(tmp_path / "chunked/probabilities/photo.tif") as src:
        assert src.count == len(NAMES) and src.crs is None and src.dataset_mask().min() == 255
        assert np.abs(src.read().transpose(1, 2, 0).astype(int) - np.round(photo_softmax * 255)).max() <= 1
    item = json.loads((tmp_path / "chunked/stac/items/landsat.json").read_text())
    assert (tmp_path / "chunked/stac/items" / item["assets"]["probabilities"]["href"]).resolve() == \
        (tmp_path / "chunked/probabilities/landsat.tif").resolve()


def test_mask_cog_overviews_hold_only_the_masks_classes(tmp_path):
    """A mask COG's overviews are class ids found in the mask at every level: columns of
    classes 0 and 2 (a pixel wide) give no 1, which any interpolating resampling would."""
    import rasterio
    from pipelines.common import palette, rasters
    from rasterio.transform import from_origin
    mask = np.zeros((1024, 1024), np.uint8)
    mask[:, ::2] = 2
    mask[:16, :16] = 255  # nodata
    info = rasters.ImageInfo(source="stripes.tif", rel="stripes", kind="geotiff", height=1024, width=1024,
                             crs="EPSG:32618", transform=tuple(from_origin(500000, 4000000, 30, 30))[:6])
    local = rasters.write_geotiff_mask(str(tmp_path / "stripes.tif"), info, [(0, 0, mask)], palette.geotiff_colormap(3))
    with rasterio.open(tmp_path / "stripes.tif") as src:
        assert src.overviews(1) == [2, 4]
        assert np.array_equal(src.read(1), mask)
    for level in (0, 1):
        with rasterio.open(tmp_path / "stripes.tif", overview_level=level) as overview:
            assert set(np.unique(overview.read(1))) <= {0, 2, 255}, level
    shutil.rmtree(local.rsplit("/", 1)[0])


def test_stac_items_for_segmented_geotiffs_validate_and_name_the_grid_and_classes(pointwise_model, tmp_path, testdata):
    """OUT/stac: a Collection and an Item per GeoTIFF, validated with pystac against the STAC
    core schemas it ships (offline); the extensions' fields checked against rasterio's reading
    of the input and the model's class table."""
    import pystac
    import pystac.validation
    import rasterio
    from rasterio.warp import transform_bounds
    model_dir, _ = pointwise_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(testdata / "geotiff/RGB.byte.tif", inputs / "landsat.tif")
    random_image(inputs / "photo.png", 40, 50, 3)
    segment(model_dir, f"{inputs}/*", tmp_path / "out", "--tile_size", "256", "--chunk_size", "300", "--scores",
            "--vectors")
    stac = tmp_path / "out" / "stac"
    collection = json.loads((stac / "collection.json").read_text())
    item_links = [link["href"] for link in collection["links"] if link["rel"] == "item"]
    assert item_links == ["items/landsat.json"]  # the photo has no CRS: no Item
    item = json.loads((stac / "items" / "landsat.json").read_text())
    # core schemas, offline (pystac's own copies); the extension fields checked by hand below
    assert pystac.validation.validate_dict(item, extensions=[]) is not None
    assert pystac.validation.validate_dict(collection, extensions=[]) is not None
    with rasterio.open(testdata / "geotiff/RGB.byte.tif") as src:
        assert item["properties"]["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert item["properties"]["proj:shape"] == [src.height, src.width]
        assert item["properties"]["proj:transform"] == list(src.transform)[:6]
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert item["bbox"] == pytest.approx([west, south, east, north], abs=1e-9)
    from rasterio.warp import transform as reproject_points
    from shapely.geometry import Point, shape
    with rasterio.open(testdata / "geotiff/RGB.byte.tif") as src:  # the footprint holds the raster's corners
        xs, ys = zip(*[src.transform * (c, r) for c, r in ((0, 0), (src.width, 0), (src.width, src.height),
                                                           (0, src.height), (src.width / 2, src.height / 2))])
        lons, lats = reproject_points(src.crs, "EPSG:4326", list(xs), list(ys))
    footprint = shape(item["geometry"]).buffer(1e-9)
    assert all(footprint.contains(Point(lon, lat)) for lon, lat in zip(lons, lats))
    assert any("projection" in e for e in item["stac_extensions"]) and any("classification" in e
                                                                            for e in item["stac_extensions"])
    assets = item["assets"]
    assert set(assets) == {"mask", "scores", "vectors", "record"}
    for key, asset in assets.items():  # hrefs relative to the Item, pointing at the real files
        assert (stac / "items" / asset["href"]).resolve().is_file(), key
    assert assets["mask"]["roles"] == ["data"] and "cloud-optimized" in assets["mask"]["type"]
    assert "confidence" in assets["scores"]["roles"]
    classes = {c["value"]: c["description"] for c in assets["mask"]["classification:classes"]}
    assert classes == {0: "background", 1: "road", 2: "building", 3: "water", 255: "no data"}
    loaded = pystac.Item.from_file(str(stac / "items" / "landsat.json"))
    assert loaded.get_self_href() and loaded.assets["mask"].get_absolute_href().endswith("masks/landsat.tif")


def components4(region: np.ndarray) -> list:
    """4-connected components of a boolean array as pixel counts (a flood fill, not rasterio)."""
    seen = np.zeros_like(region)
    sizes = []
    for y, x in zip(*np.nonzero(region)):
        if seen[y, x]:
            continue
        stack, size = [(y, x)], 0
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < region.shape[0] and 0 <= nx < region.shape[1] and region[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        sizes.append(size)
    return sorted(sizes)


# make_color_model's colours: background (none above 128), road (red), building (green), water (blue)
BLOCK_COLORS = np.array([[40, 40, 40], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)


def color_blocks(seed: int, rows: int, cols: int, size: int) -> np.ndarray:
    """A rows x cols grid of size-pixel blocks of random BLOCK_COLORS."""
    return BLOCK_COLORS[np.random.default_rng(seed).integers(0, 4, (rows, cols))].repeat(size, 0).repeat(size, 1)


def color_model_and_inputs(tmp_path):
    """The colour model (tests.helpers.make_color_model) in tmp_path/model and an empty input folder."""
    from tests.helpers import make_color_model
    (tmp_path / "model").mkdir()
    inputs = tmp_path / "in"
    inputs.mkdir()
    return make_color_model(tmp_path / "model"), inputs


def test_vectors_one_polygon_per_region_merged_across_chunks_and_read_by_gdal(tmp_path):
    """--vectors: a photo's regions in pixel coordinates; a GeoTIFF cut into a 3 x 3 grid of
    chunks gives the polygons of one whole pass (regions cut by chunk borders merged), in its CRS,
    read back with fiona (GDAL's OGR)."""
    import fiona
    import rasterio
    import shapely
    from rasterio.transform import from_origin
    from shapely.geometry import shape
    model_dir, inputs = color_model_and_inputs(tmp_path)

    def blocks(h, w, seed, size):
        coarse = BLOCK_COLORS[np.random.default_rng(seed).integers(0, 4, (h // size + 1, w // size + 1))]
        return coarse.repeat(size, 0).repeat(size, 1)[:h, :w]
    Image.fromarray(blocks(60, 90, 11, 6)).save(inputs / "photo.png")
    scene = blocks(640, 700, 12, 23)  # blocks that straddle the chunk borders at 300 and 600
    with rasterio.open(inputs / "scene.tif", "w", driver="GTiff", height=640, width=700, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4100000, 10, 10)) as dst:
        dst.write(scene.transpose(2, 0, 1))
    segment(model_dir, f"{inputs}/*", tmp_path / "chunked", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "300", "--vectors", "--vector_format", "geojson")
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "whole", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "4096", "--vectors", "--vector_format", "geojson")
    assert not [p for p in (tmp_path / "chunked/.parts").rglob("*") if p.is_file()]  # parts cleaned up
    # the photo: one feature per 4-connected region of each class but the background, its pixel count
    mask = np.asarray(Image.open(tmp_path / "chunked/masks/photo.png"))
    photo = json.loads((tmp_path / "chunked/vectors/photo.geojson").read_text())
    assert photo["segpipe:coordinates"] == "pixels" and "crs" not in photo
    for index, name in enumerate(NAMES[1:], start=1):
        got = sorted(f["properties"]["area_pixels"] for f in photo["features"] if f["properties"]["class"] == name)
        assert got == components4(mask == index) and len(got) >= 5, name
    for feature in photo["features"]:
        polygon = shape(feature["geometry"])
        assert polygon.is_valid and polygon.area == feature["properties"]["area_pixels"]  # pixel coordinates
        assert 0 < feature["properties"]["mean_confidence"] <= 1
    # the scene: chunked == whole (geometries equal), areas in the CRS's units, regions as a flood fill finds them
    with fiona.open(tmp_path / "chunked/vectors/scene.geojson") as chunked, \
            fiona.open(tmp_path / "whole/vectors/scene.geojson") as whole:
        assert chunked.crs.to_epsg() == 32633 and len(chunked) == len(whole) > 20
        a = sorted((f["properties"]["class"], f["properties"]["area_pixels"], shape(f["geometry"]).bounds,
                    shape(f["geometry"]).wkt, f["properties"]["mean_confidence"]) for f in chunked)
        b = sorted((f["properties"]["class"], f["properties"]["area_pixels"], shape(f["geometry"]).bounds,
                    shape(f["geometry"]).wkt, f["properties"]["mean_confidence"]) for f in whole)
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert all(shapely.equals(shapely.from_wkt(x[3]), shapely.from_wkt(y[3])) for x, y in zip(a, b))
    assert max(abs(x[4] - y[4]) for x, y in zip(a, b)) <= 1 / 255  # uint8 scores, blended in another order
    with rasterio.open(tmp_path / "whole/masks/scene.tif") as src:
        labels = src.read(1)
    features = json.loads((tmp_path / "chunked/vectors/scene.geojson").read_text())["features"]
    for feature in features:
        assert shape(feature["geometry"]).is_valid
        assert shape(feature["geometry"]).area == pytest.approx(feature["properties"]["area_pixels"] * 100)
        assert feature["properties"]["area"] == pytest.approx(feature["properties"]["area_pixels"] * 100)
    for index, name in enumerate(NAMES[1:], start=1):
        got = sorted(f["properties"]["area_pixels"] for f in features if f["properties"]["class"] == name)
        assert got == components4(labels == index) and len(got) >= 20, name
    # --vector_min_area on the chunked raster: the regions of the flood fill of at least that many
    # pixels, those whose pieces in each chunk are smaller included (a chunk drops only whole regions)
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "min_area", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "300", "--vectors", "--vector_format", "geojson", "--vector_min_area", "600")
    kept = json.loads((tmp_path / "min_area/vectors/scene.geojson").read_text())["features"]
    for index, name in enumerate(NAMES[1:], start=1):
        got = sorted(f["properties"]["area_pixels"] for f in kept if f["properties"]["class"] == name)
        assert got == [n for n in components4(labels == index) if n >= 600] and got, name


def test_vector_minimum_area_and_simplification(tmp_path):
    from shapely.geometry import shape

    model_dir, inputs = color_model_and_inputs(tmp_path)
    image = np.full((80, 80, 3), 40, np.uint8)
    yy, xx = np.mgrid[0:80, 0:80]
    image[(yy - 40) ** 2 + (xx - 40) ** 2 < 30 ** 2] = (220, 30, 30)  # a disc of road: a staircase outline
    image[2:4, 2:4] = (30, 30, 220)  # a 4-pixel speck of water
    Image.fromarray(image).save(inputs / "disc.png")
    runs = {}
    for name, extra in (("exact", []), ("clean", ["--vector_min_area", "5", "--vector_simplify", "1.5"])):
        segment(model_dir, f"{inputs}/*.png", tmp_path / name, "--tile_size", "128", "--vectors",
                "--vector_format", "geojson", *extra)
        runs[name] = json.loads((tmp_path / name / "vectors/disc.geojson").read_text())["features"]
    assert sorted(f["properties"]["class"] for f in runs["exact"]) == ["road", "water"]
    (disc,) = runs["clean"]  # the speck is under 5 pixels
    exact = shape(next(f for f in runs["exact"] if f["properties"]["class"] == "road")["geometry"])
    simple = shape(disc["geometry"])
    assert simple.is_valid and len(simple.exterior.coords) < len(exact.exterior.coords) / 3
    assert simple.symmetric_difference(exact).area < 0.05 * exact.area  # within the tolerance's band
    assert disc["properties"]["area_pixels"] == exact.area  # attributes are the region's, not the outline's


@pytest.mark.parametrize("fmt, driver", [("gpkg", "GPKG"), ("fgb", "FlatGeobuf")])
def test_vectors_as_geopackage_and_flatgeobuf_hold_the_geojson_features(tmp_path, fmt, driver):
    import fiona
    from shapely.geometry import shape

    model_dir, inputs = color_model_and_inputs(tmp_path)
    image = color_blocks(4, 8, 9, 7)
    Image.fromarray(image).save(inputs / "blocks.png")
    import rasterio
    from rasterio.transform import from_origin
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", height=56, width=63, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4100000, 10, 10)) as dst:
        dst.write(image.transpose(2, 0, 1))
    segment(model_dir, f"{inputs}/*", tmp_path / "json", "--tile_size", "64", "--vectors", "--vector_format", "geojson")
    shutil.copy(tmp_path / "scene.tif", inputs / "scene.tif")
    segment(model_dir, f"{inputs}/*", tmp_path / fmt, "--tile_size", "64", "--vectors", "--vector_format", fmt)
    item = json.loads((tmp_path / fmt / "stac/items/scene.json").read_text())  # STAC names the file written
    assert item["assets"]["vectors"]["href"] == f"../../vectors/scene.{fmt}"
    assert (tmp_path / fmt / "stac/items" / item["assets"]["vectors"]["href"]).resolve().is_file()
    reference = json.loads((tmp_path / "json/vectors/blocks.geojson").read_text())["features"]
    assert {f["properties"]["class"] for f in reference} == {"road", "building", "water"}  # not the background
    if fmt == "gpkg":  # --vector_classes keeps the classes it names (the background too, when named)
        segment(model_dir, f"{inputs}/*", tmp_path / "some", "--tile_size", "64", "--vectors",
                "--vector_format", "geojson", "--vector_classes", "background,water")
        some = json.loads((tmp_path / "some/vectors/blocks.geojson").read_text())["features"]
        assert {f["properties"]["class"] for f in some} == {"background", "water"}
        assert sorted(f["properties"]["area_pixels"] for f in some if f["properties"]["class"] == "water") == \
            sorted(f["properties"]["area_pixels"] for f in reference if f["properties"]["class"] == "water")
        with pytest.raises(SystemExit, match="not classes of the model"):
            segment(model_dir, f"{inputs}/*", tmp_path / "bad", "--vectors", "--vector_classes", "lava")
    with fiona.open(tmp_path / fmt / "vectors" / f"blocks.{fmt}") as layer:
        assert layer.driver == driver and len(layer) == len(reference) > 10
        got = sorted((f["properties"]["class"], f["properties"]["area_pixels"], shape(f["geometry"]).bounds)
                     for f in layer)
    assert got == sorted((f["properties"]["class"], f["properties"]["area_pixels"], shape(f["geometry"]).bounds)
                         for f in reference)


def test_vectors_of_rasters_without_a_crs_say_which_coordinates_they_hold(tmp_path):
    """A GeoTIFF with a geotransform but no CRS: polygons in the transform's coordinates (on its
    mask in a GIS), said as "transform", no CRS member; one with neither: pixel coordinates."""
    import rasterio
    import rasterio.features
    import shapely
    from rasterio.transform import from_origin
    from shapely.geometry import shape
    model_dir, inputs = color_model_and_inputs(tmp_path)
    scene = color_blocks(4, 8, 9, 7)  # 56 x 63
    transform = from_origin(1000, 2000, 2, 2)
    for name, georeference in (("placed.tif", {"transform": transform}), ("bare.tif", {})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(inputs / name, "w", driver="GTiff", height=56, width=63, count=3, dtype="uint8",
                               **georeference) as dst:
                dst.write(scene.transpose(2, 0, 1))
    segment(model_dir, f"{inputs}/*.tif", tmp_path / "out", "--tile_size", "64", "--vectors", "--vector_format",
            "geojson")
    assert not (tmp_path / "out/stac").exists()  # no Item without a CRS (none can be placed in WGS84)
    for name, coordinates, pixel_area in (("placed", "transform", 4), ("bare", "pixels", 1)):
        collection = json.loads((tmp_path / f"out/vectors/{name}.geojson").read_text())
        assert collection["segpipe:coordinates"] == coordinates and "crs" not in collection
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(tmp_path / f"out/masks/{name}.tif") as src:
                labels, mask_transform = src.read(1), src.transform
        # GDAL's polygonize of the written mask, placed by the mask's own transform
        expected = sorted(shape(g).wkt for g, v in rasterio.features.shapes(labels, transform=mask_transform)
                          if int(v) != 0)
        got = collection["features"]
        assert len(got) == len(expected) > 5
        assert all(shapely.equals(shapely.from_wkt(a), shapely.from_wkt(b))
                   for a, b in zip(sorted(shape(f["geometry"]).wkt for f in got), expected))
        for feature in got:
            assert feature["properties"]["area"] == pytest.approx(feature["properties"]["area_pixels"] * pixel_area)


def test_the_job_layer_holds_every_inputs_polygons_in_a_layer_per_crs(tmp_path, testdata):
    """--vectors (GeoPackage by default): OUT/segments.gpkg holds the polygons of every input,
    a layer per coordinate system (the Landsat scene's, a synthetic scene's, the photo's pixels),
    read back with fiona (GDAL's OGR); per class the polygons' area equals the mask's pixel
    count x the pixel area; one CRS: one layer, "segments"; a layer that cannot be written is an
    error record and no file."""
    import fiona
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import shape
    model_dir, inputs = color_model_and_inputs(tmp_path)
    blocks = color_blocks(5, 12, 13, 9)  # 108 x 117
    Image.fromarray(blocks).save(inputs / "photo.png")
    with rasterio.open(inputs / "scene.tif", "w", driver="GTiff", height=108, width=117, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4100000, 10, 10)) as dst:
        dst.write(blocks.transpose(2, 0, 1))
    shutil.copy(testdata / "geotiff/RGB.byte.tif", inputs / "landsat.tif")  # EPSG:32618, 791 x 718
    segment(model_dir, f"{inputs}/*", tmp_path / "out", "--tile_size", "256", "--tile_overlap", "32",
            "--chunk_size", "300", "--vectors")
    out = tmp_path / "out"
    assert (out / "errors.jsonl").read_text() == ""
    layers = sorted(fiona.listlayers(out / "segments.gpkg"))
    assert layers == ["segments_epsg_32618", "segments_epsg_32633", "segments_no_crs"]
    for layer_name, rel, epsg in (("segments_epsg_32618", "landsat", 32618), ("segments_epsg_32633", "scene", 32633),
                                  ("segments_no_crs", "photo", None)):
        with fiona.open(out / "segments.gpkg", layer=layer_name) as layer:
            assert (layer.crs.to_epsg() if layer.crs else None) == epsg
            got = sorted((f["properties"]["class"], f["properties"]["area_pixels"], f["properties"]["source"],
                          shape(f["geometry"]).wkt) for f in layer)
        with fiona.open(out / "vectors" / f"{rel}.gpkg") as own:  # the input's own layer, feature for feature
            assert sorted((f["properties"]["class"], f["properties"]["area_pixels"], f["properties"]["source"],
                           shape(f["geometry"]).wkt) for f in own) == got
        assert {source for _, _, source, _ in got} == {str(next(inputs.glob(rel + ".*")))}
        if rel == "photo":
            labels, pixel_area = np.asarray(Image.open(out / "masks/photo.png")), 1.0
        else:
            with rasterio.open(out / "masks" / f"{rel}.tif") as src:
                labels, pixel_area = src.read(1), abs(src.transform.a * src.transform.e)
        for index, name in enumerate(NAMES[1:], start=1):  # exact: no simplification
            area = sum(shape(f["geometry"]).area for f in fiona.open(out / "segments.gpkg", layer=layer_name)
                       if f["properties"]["class"] == name)
            assert area == pytest.approx(np.count_nonzero(labels == index) * pixel_area, rel=1e-9), (rel, name)
        assert len(got) > 10, rel
    # one CRS: one layer named segments; GeoJSON on request
    (inputs / "photo.png").unlink()
    (inputs / "landsat.tif").unlink()
    segment(model_dir, f"{inputs}/*", tmp_path / "one", "--tile_size", "64", "--vectors", "--vector_format", "geojson")
    assert fiona.listlayers(tmp_path / "one/segments.geojson") == ["segments"]
    with fiona.open(tmp_path / "one/segments.geojson") as layer:
        assert layer.crs.to_epsg() == 32633 and len(layer) == len(json.loads(
            (tmp_path / "one/vectors/scene.geojson").read_text())["features"])
    # the job's layer cannot be written (an input's polygons cannot be read): an error record, no file
    from pipelines.segment import outputs
    broken = tmp_path / "broken"
    (broken / "vectors").mkdir(parents=True)
    shutil.copy(tmp_path / "one/vectors/scene.geojson", broken / "vectors/a.geojson")
    (broken / "vectors/b.geojson").write_text('{"type": "FeatureCollection", "features": [')  # cut short
    (broken / "records.jsonl").write_text('{"file_name": "a.tif"}\n{"file_name": "b.tif"}\n')
    spec = outputs.OutputSpec(str(broken), tuple(NAMES), vectors=True, vector_format="geojson")
    (error,) = outputs.write_job_layers(None, [str(broken / "records.jsonl")], spec)
    assert error["reason"] == "vectors_failed" and error["source"] == f"{broken}/segments.geojson"
    assert sorted(p.name for p in broken.rglob("*")) == ["a.geojson", "b.geojson", "records.jsonl", "vectors"]
