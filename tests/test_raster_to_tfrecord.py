"""segpipe dataset raster on the real Landsat scene in ../shared/testdata with a label raster on
its grid: chips equal the scene's windows read independently, masks the label values mapped
(255 where either raster is nodata), mostly-nodata chips skipped and counted, the chip index in
WGS84, and the same window reads the same pixels through batch segmentation."""
import json
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipelines import raster_to_tfrecord
from tests.conftest import REQUIRE_TESTDATA
from tests.helpers import read_records

VALUES = {10: 1, 20: 2, 30: 3}
COLORS = {"classes": ["background", "dark", "mid", "bright"],
          "colors": [{"color": [value], "index": index} for value, index in VALUES.items()]}


@pytest.fixture
def scene_and_labels(tmp_path, testdata):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "labels").mkdir()
    scene = tmp_path / "scenes/landsat.tif"
    shutil.copy(testdata / "geotiff/RGB.byte.tif", scene)
    with rasterio.open(scene) as src:
        band = src.read(1)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, nodata=0)
    labels = np.where(band < 60, 10, np.where(band < 120, 20, 30)).astype(np.uint8)
    labels[:40] = 0  # a stripe the labeller left out: nodata in the label raster
    with rasterio.open(tmp_path / "labels/landsat.tif", "w", **profile) as dst:
        dst.write(labels[None])
    (tmp_path / "colors.json").write_text(json.dumps(COLORS))
    return scene, labels


def boxes_on_pixel_centres(boxes, index, valid) -> np.ndarray:
    """The reference mask of pixel-aligned boxes ((r0, c0, r1, c1), class) burnt in order: a pixel
    takes a box's class when its centre lies inside (rasterio's rule, here in NumPy); 255 where
    the scene is not valid."""
    height, width = valid.shape
    expected = np.zeros((height, width), np.uint8)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    for (r0, c0, r1, c1), cls in boxes:
        expected[(rows > r0) & (rows < r1) & (cols > c0) & (cols < c1)] = index[cls]
    expected[~valid] = 255
    return expected


def assert_chips_are(out, expected, count=12) -> dict:
    """Every 256-px chip's mask in OUT equals its window of ``expected``; returns the records."""
    records = read_records(str(out / "*.tfrecord"))
    assert len(records) == count
    for chip, record in records.items():
        r, c = (int(part[1:]) for part in chip.split("/")[1].split("_"))
        assert np.array_equal(record["mask"], expected[r:r + 256, c:c + 256]), chip
    return records


def expected_chips(scene, labels, max_nodata=0.5):
    """The 256-px chips at stride 256 read independently with rasterio: {chip id: (pixels, mask)}
    for those kept (nodata share <= max_nodata, the label values mapped, 255 where either raster
    is nodata), and how many were skipped."""
    with rasterio.open(scene) as src:
        height, width = src.height, src.width
        starts_r, starts_c = [0, 256, height - 256], [0, 256, 512, width - 256]
        expected_written, skipped = {}, 0
        for r in starts_r:
            for c in starts_c:
                window = Window(c, r, 256, 256)
                pixels = src.read(window=window).transpose(1, 2, 0)
                scene_valid = src.dataset_mask(window=window) > 0
                values = labels[r:r + 256, c:c + 256]
                mask = np.vectorize(lambda v: VALUES.get(int(v), 255))(values).astype(np.uint8)
                mask[~scene_valid | (values == 0)] = 255
                if (mask == 255).mean() > max_nodata:
                    skipped += 1
                    continue
                expected_written[f"landsat/r{r:06d}_c{c:06d}"] = (pixels, mask)
    return expected_written, skipped


def test_chips_are_the_scene_windows_and_the_mapped_labels(tmp_path, scene_and_labels):
    scene, labels = scene_and_labels
    out = tmp_path / "out"
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--labels", str(tmp_path / "labels/*.tif"),
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", str(out),
                            "--chip_size", "256", "--stride", "256", "--max_nodata", "0.5"])
    records = read_records(str(out / "*.tfrecord"))
    expected_written, skipped = expected_chips(scene, labels)
    assert sorted(records) == sorted(expected_written) and skipped > 0
    import io

    from PIL import Image
    for chip, (pixels, mask) in expected_written.items():
        got = np.asarray(Image.open(io.BytesIO(records[chip]["image/encoded"])))
        assert np.array_equal(got, pixels), chip
        assert np.array_equal(records[chip]["mask"], mask), chip
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images_written"] == len(expected_written) and stats["chips_skipped"] == {"nodata": skipped}
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["splits"]["train"]["examples"] == len(expected_written)
    index = json.loads((out / "chips.geojson").read_text())
    assert sorted(f["properties"]["chip"] for f in index["features"]) == sorted(expected_written)
    first = next(f for f in index["features"] if f["properties"]["chip"] == "landsat/r000000_c000256")
    with rasterio.open(scene) as src:
        from rasterio.warp import transform as reproject_points
        x, y = src.transform * (256, 0)
        lon, lat = reproject_points(src.crs, "EPSG:4326", [x], [y])
    assert first["geometry"]["coordinates"][0][0] == pytest.approx([lon[0], lat[0]], abs=1e-9)
    assert first["properties"]["transform"][2] == pytest.approx(x)
    # the same chips as STAC: an Item per chip, valid against the STAC core schemas pystac ships (offline)
    import pystac.validation
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert pystac.validation.validate_dict(collection, extensions=[]) is not None
    items = {}
    for link in (link for link in collection["links"] if link["rel"] == "item"):
        item = json.loads((out / "stac" / link["href"]).read_text())
        assert pystac.validation.validate_dict(item, extensions=[]) is not None
        items[item["properties"]["segpipe:chip"]] = item
    assert sorted(items) == sorted(expected_written)
    stac_first = items["landsat/r000000_c000256"]
    assert stac_first["geometry"] == first["geometry"]
    with rasterio.open(scene) as src:
        assert stac_first["properties"]["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert stac_first["properties"]["proj:transform"] == pytest.approx(list(src.transform * rasterio.Affine.translation(256, 0))[:6])
    assert stac_first["properties"]["proj:shape"] == [256, 256] and stac_first["properties"]["segpipe:split"] == "train"
    assert (out / "stac" / "items" / stac_first["assets"]["dataset"]["href"]).resolve() == (out / "dataset.json").resolve()
    # the same facts in the record itself, read by TensorFlow's own parser
    import tensorflow as tf
    raw = next(iter(tf.data.TFRecordDataset(sorted(str(p) for p in out.glob("*.tfrecord")))))
    keys = ("image/geo/scene", "image/geo/crs", "image/geo/window", "image/geo/transform", "image/source_id")
    geo = {k: v.numpy().decode() for k, v in tf.io.parse_single_example(
        raw, {k: tf.io.FixedLenFeature((), tf.string) for k in keys}).items()}
    r, c = (int(part[1:]) for part in geo["image/source_id"].split("/")[1].split("_"))
    assert geo["image/geo/scene"] == str(scene) and geo["image/geo/window"] == f"{r},{c},256,256"
    with rasterio.open(scene) as src:
        assert rasterio.crs.CRS.from_string(geo["image/geo/crs"]) == src.crs
        chip_transform = src.transform * rasterio.Affine.translation(c, r)
    assert [float(v) for v in geo["image/geo/transform"].split(",")] == pytest.approx(list(chip_transform)[:6])
    assert not list((out / ".staging").rglob("*.png"))


def test_a_chip_reads_the_same_pixels_as_batch_segmentation(tmp_path, scene_and_labels):
    """One pixel path: the dataset job's chip and batch segmentation's window of the same scene,
    through their own entry points (here a 16-bit scene, so the stretch is in play)."""
    from pipelines.segment.chunks import ChunkJob, plan_chunks
    from pipelines.raster_to_tfrecord import ChipFn, PlanChipsFn
    from pipelines.masks_to_tfrecord import ColorMap
    from segcli.raster import RasterConfig
    scene, _ = scene_and_labels
    with rasterio.open(scene) as src:
        profile = dict(src.profile, dtype="uint16", nodata=None)
        data = src.read().astype(np.uint16) * 200 + 17
    wide = tmp_path / "scenes/landsat16.tif"
    with rasterio.open(wide, "w", **profile) as dst:
        dst.write(data)
    shutil.copy(tmp_path / "labels/landsat.tif", tmp_path / "labels/landsat16.tif")
    config = RasterConfig(scenes=str(tmp_path / "scenes/*.tif"), labels="x", mask_colors="", output_dir=str(tmp_path / "o"),
                          chip_size=256, stride=256, max_nodata=1.0)
    jobs = list(PlanChipsFn(config, str(tmp_path / "scenes")).process(
        ("landsat16", {"scene": [str(wide)], "labels": [str(tmp_path / "labels/landsat16.tif")]})))
    chip_job = next(j for j in jobs if j[3][:2] == (256, 512))
    outputs = list(ChipFn(config, ColorMap.from_json(COLORS), str(tmp_path / "o")).process(chip_job))
    ref = next(o for o in outputs if isinstance(o, tuple))[2]
    from PIL import Image
    chip_pixels = np.asarray(Image.open(ref.path))
    chunk = next(c for c in plan_chunks(str(wide), "landsat16", 512, 64, 4096))
    segment_job = ChunkJob(chunk)
    segment_job.open()
    pixels, _ = segment_job.read(256, 512, 256, 256)
    segment_job.close()
    assert np.array_equal(chip_pixels, pixels) and pixels.std() > 10


def test_misaligned_unpaired_and_unmapped_inputs_are_error_records_and_the_rest_converted(tmp_path, scene_and_labels):
    scene, labels = scene_and_labels
    with rasterio.open(scene) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform * rasterio.Affine.translation(3, 0), nodata=0)
    shutil.copy(scene, tmp_path / "scenes/shifted.tif")
    with rasterio.open(tmp_path / "labels/shifted.tif", "w", **profile) as dst:  # a grid 3 pixels off
        dst.write(labels[None])
    shutil.copy(scene, tmp_path / "scenes/alone.tif")  # no label raster
    odd = labels.copy()
    odd[300:310, 300:310] = 77  # a value COLORS.json does not map
    with rasterio.open(tmp_path / "labels/odd.tif", "w", **dict(profile, transform=rasterio.open(scene).transform)) as dst:
        dst.write(odd[None])
    shutil.copy(scene, tmp_path / "scenes/odd.tif")
    out = tmp_path / "out"
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--labels", str(tmp_path / "labels/*.tif"),
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", str(out),
                            "--chip_size", "256", "--stride", "256"])
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = sorted(e["reason"] for e in errors)
    assert reasons == ["labels_do_not_align", "scene_without_labels", "unmapped_mask_color"], errors
    records = read_records(str(out / "*.tfrecord"))
    assert {chip.split("/")[0] for chip in records} == {"landsat", "odd"}
    assert "odd/r000256_c000256" not in records and "landsat/r000256_c000256" in records


def test_vector_labels_in_wgs84_are_burnt_into_each_chip_in_the_scenes_crs(tmp_path, scene_and_labels):
    """Building-footprint-like rectangles drawn in the scene's UTM grid, stored as RFC 7946
    GeoJSON (lon/lat), a later feature over an earlier one, plus a feature without geometry and
    one of an unknown class: the masks equal the rectangles applied to the pixel centres here in
    NumPy (the later on top; 255 where the scene is nodata); a feature without geometry, one of an
    unknown class and a self-intersecting bow-tie are error records, not burnt."""
    from rasterio.warp import transform as reproject_points
    scene, _ = scene_and_labels
    with rasterio.open(scene) as src:
        t, crs = src.transform, src.crs
        scene_valid = src.dataset_mask() > 0
    boxes = [((100, 120, 400, 380), "bright"), ((300, 200, 600, 500), 20), ((50, 600, 150, 700), "dark")]
    features = []
    for (r0, c0, r1, c1), cls in boxes:
        xs, ys = zip(*[t * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))])
        lons, lats = reproject_points(crs, "EPSG:4326", list(xs), list(ys))
        features.append({"type": "Feature", "properties": {"class": cls},
                         "geometry": {"type": "Polygon", "coordinates": [list(map(list, zip(lons, lats)))]}})
    features.append({"type": "Feature", "properties": {"class": "dark"}, "geometry": None})
    features.append({"type": "Feature", "properties": {"class": "lava"}, "geometry": features[0]["geometry"]})
    square = features[2]["geometry"]["coordinates"][0]  # the third box's corners, crossed into a bow-tie
    features.append({"type": "Feature", "properties": {"class": "dark"}, "geometry": {
        "type": "Polygon", "coordinates": [[square[0], square[2], square[1], square[3], square[0]]]}})
    (tmp_path / "labels.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    expected = boxes_on_pixel_centres(boxes, {"bright": 3, 20: 2, "dark": 1}, scene_valid)
    out = tmp_path / "out"
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--vectors", str(tmp_path / "labels.geojson"),
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", str(out),
                            "--chip_size", "256", "--stride", "256", "--max_nodata", "1.0"])
    records = assert_chips_are(out, expected)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["reason"] for e in errors) == ["no_geometry", "self_intersection", "unknown_class"]
    # chips without a labelled object: skipped and counted when asked
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--vectors", str(tmp_path / "labels.geojson"),
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", str(tmp_path / "some"),
                            "--chip_size", "256", "--stride", "256", "--max_nodata", "1.0", "--min_labelled", "0.001"])
    kept = read_records(str(tmp_path / "some/*.tfrecord"))
    labelled = {chip for chip, record in records.items() if ((record["mask"] > 0) & (record["mask"] < 255)).mean() >= 0.001}
    assert set(kept) == labelled and 0 < len(kept) < len(records)
    stats = json.loads((tmp_path / "some/stats.json").read_text())
    assert stats["chips_skipped"] == {"unlabelled": len(records) - len(kept)}


def test_the_dataset_jobs_load_no_tensorflow():
    """Dataset workers stay light: none of the dataset jobs imports TensorFlow or Keras."""
    import subprocess
    import sys
    probe = ("import sys\nimport pipelines.raster_to_tfrecord, pipelines.coco_to_tfrecord, "
             "pipelines.masks_to_tfrecord, pipelines.labelstudio_to_tfrecord\n"
             "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-500:]


def test_chip_offsets_cover_the_scene_or_follow_a_larger_stride():
    from pipelines.raster_to_tfrecord import chip_windows
    from segmodel.tiling import window_starts as chip_starts
    assert chip_starts(718, 256, 256) == [0, 256, 462]
    assert chip_starts(700, 256, 128) == [0, 128, 256, 384, 444]
    assert chip_starts(100, 256, 256) == [0]
    assert chip_starts(1000, 256, 300) == [0, 300, 600]  # a stride beyond the chip skips pixels, as asked
    assert chip_windows(100, 300, 256, 256) == [(0, 0, 100, 256), (0, 44, 100, 256)]


def test_scenes_and_labels_on_gcs_through_the_emulator(tmp_path, scene_and_labels, gcs_bucket):
    """The job over gs:// (scenes read through Beam's filesystem, window by window): the same
    chips as from local files, and its outputs on gs://."""
    from apache_beam.io.filesystems import FileSystems

    from tests.helpers import upload_tree
    prefix = f"gs://{gcs_bucket}/raster"
    upload_tree(tmp_path / "scenes", f"{prefix}/scenes")
    upload_tree(tmp_path / "labels", f"{prefix}/labels")
    with FileSystems.create(f"{prefix}/colors.json") as handle:
        handle.write((tmp_path / "colors.json").read_bytes())
    args = ["--mask_colors", f"{prefix}/colors.json", "--chip_size", "256", "--stride", "256"]
    raster_to_tfrecord.run(["--scenes", f"{prefix}/scenes/*.tif", "--labels", f"{prefix}/labels/*.tif",
                            "--output_dir", f"{prefix}/out", *args])
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--labels", str(tmp_path / "labels/*.tif"),
                            "--output_dir", str(tmp_path / "local"), *args[2:],
                            "--mask_colors", str(tmp_path / "colors.json")])
    local = read_records(str(tmp_path / "local/*.tfrecord"))
    (tmp_path / "from_gcs").mkdir()
    for meta in FileSystems.match([f"{prefix}/out/*.tfrecord"])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            (tmp_path / "from_gcs" / meta.path.rsplit("/", 1)[1]).write_bytes(handle.read())
    remote = read_records(str(tmp_path / "from_gcs/*.tfrecord"))
    assert sorted(remote) == sorted(local) and len(local) > 0
    for chip in local:
        assert remote[chip]["image/encoded"] == local[chip]["image/encoded"]
        assert np.array_equal(remote[chip]["mask"], local[chip]["mask"])
    assert FileSystems.exists(f"{prefix}/out/chips.geojson") and FileSystems.exists(f"{prefix}/out/dataset.json")
    assert not FileSystems.match([f"{prefix}/out/.staging/chips/**"])[0].metadata_list


@pytest.mark.parametrize("driver, crs", [("GPKG", "EPSG:3857"), ("ESRI Shapefile", None)])
def test_geopackage_and_shapefile_labels_written_by_fiona(tmp_path, scene_and_labels, driver, crs):
    """The same rectangles as above through fiona (the vector writer GIS tools use): a
    GeoPackage in Web Mercator (reprojected to the scene's UTM zone) and a Shapefile in the
    scene's own CRS; masks equal the rectangles applied to pixel centres."""
    try:
        import fiona
    except ImportError:  # fiona is a test extra: missing, it is a broken set-up wherever the data is required
        if REQUIRE_TESTDATA:
            pytest.fail("fiona (a test extra) is not installed")
        pytest.skip("fiona is not installed (pip install -e '.[test]')")
    from rasterio.warp import transform as reproject_points
    scene, _ = scene_and_labels
    with rasterio.open(scene) as src:
        t, scene_crs = src.transform, src.crs
        scene_valid = src.dataset_mask() > 0
    crs = crs or scene_crs.to_string()
    boxes = [((100, 120, 400, 380), "bright"), ((300, 200, 600, 500), "mid")]
    path = tmp_path / ("labels.gpkg" if driver == "GPKG" else "labels.shp")
    schema = {"geometry": "Polygon", "properties": {"class": "str"}}
    # No R-tree index written: in a process that has loaded rasterio's own GDAL first, fiona's
    # SQLite may lack the rtree module (reading an indexed GeoPackage works either way).
    options = {"SPATIAL_INDEX": "NO"} if driver == "GPKG" else {}
    with fiona.open(path, "w", driver=driver, crs=crs, schema=schema, **options) as dst:
        for (r0, c0, r1, c1), cls in boxes:
            xs, ys = zip(*[t * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))])
            xs, ys = reproject_points(scene_crs, crs, list(xs), list(ys))
            dst.write({"geometry": {"type": "Polygon", "coordinates": [list(zip(xs, ys))]},
                       "properties": {"class": cls}})
    expected = boxes_on_pixel_centres(boxes, {"bright": 3, "mid": 2}, scene_valid)
    out = tmp_path / "out"
    raster_to_tfrecord.run(["--scenes", str(tmp_path / "scenes/*.tif"), "--vectors", str(path),
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", str(out),
                            "--chip_size", "256", "--stride", "256", "--max_nodata", "1.0"])
    assert_chips_are(out, expected)


def test_polygon_validity_is_geos_s_bow_ties_self_touching_rings_and_a_20000_vertex_lake():
    """Validity by the OGC rules (GEOS through shapely): a bow-tie and a ring that touches itself
    at one vertex are left out; winding either way is fine; a 20,000-vertex lake is checked in
    well under a second (a pairwise edge test would compare 2e8 pairs)."""
    import time

    from pipelines.raster_to_tfrecord import geometry_problem
    square = [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]
    assert geometry_problem({"type": "Polygon", "coordinates": [square]}) is None
    assert geometry_problem({"type": "Polygon", "coordinates": [square[::-1]]}) is None  # clockwise
    bow_tie = [[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]
    assert geometry_problem({"type": "Polygon", "coordinates": [bow_tie]}).startswith("self_intersection")
    touching = [[0, 0], [2, 2], [4, 0], [4, 4], [2, 2], [0, 4], [0, 0]]  # passes through (2, 2) twice
    assert geometry_problem({"type": "MultiPolygon", "coordinates": [[square], [touching]]}).startswith(
        "self_intersection")
    hole_outside = [square, [[10, 10], [11, 10], [11, 11], [10, 10]]]
    assert geometry_problem({"type": "Polygon", "coordinates": hole_outside}).startswith("invalid_polygon")
    assert geometry_problem({"type": "Polygon", "coordinates": []}) == "no_geometry"
    angles = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    radius = 1000 + 50 * np.sin(angles * 37)
    lake = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1).tolist()
    started = time.perf_counter()
    assert geometry_problem({"type": "Polygon", "coordinates": [lake + lake[:1]]}) is None
    assert time.perf_counter() - started < 1.0
    crossed = lake[:]
    crossed[100], crossed[10100] = crossed[10100], crossed[100]  # two far vertices swapped: edges cross
    assert geometry_problem({"type": "Polygon", "coordinates": [crossed + crossed[:1]]}).startswith(
        "self_intersection")


def test_the_raster_job_on_beams_test_pipeline(tmp_path, scene_and_labels):
    """build_pipeline on Beam's TestPipeline with assert_that on the shards it writes, and run()
    given a test_pipeline: the chips read independently with rasterio."""
    import io

    import apache_beam as beam
    from PIL import Image
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.dataset.colors import load_color_map
    from segcli.raster import RasterConfig
    args = ["--scenes", str(tmp_path / "scenes/*.tif"), "--labels", str(tmp_path / "labels/*.tif"),
            "--mask_colors", str(tmp_path / "colors.json"), "--chip_size", "256", "--stride", "256"]
    scene, labels = scene_and_labels
    reference, _ = expected_chips(scene, labels, max_nodata=0.5)  # the job's default --max_nodata
    assert reference
    config = RasterConfig(scenes=args[1], labels=args[3], mask_colors=args[5], output_dir=str(tmp_path / "tp"),
                          chip_size=256, stride=256, num_shards=2)
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        shards = raster_to_tfrecord.build_pipeline(p, config, load_color_map(config.mask_colors))
        assert_that(shards | beam.Map(lambda s: s["file"]),
                    equal_to(["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]), label="Files")
        assert_that(shards | beam.Map(lambda s: s["examples"]) | beam.CombineGlobally(sum),
                    equal_to([len(reference)]), label="Examples")
    result = raster_to_tfrecord.run([*args, "--output_dir", str(tmp_path / "run")],
                                    test_pipeline=TestPipeline(runner=fn_runner.FnApiRunner()))
    assert result.state == "DONE"
    records = read_records(str(tmp_path / "run/*.tfrecord"))
    assert sorted(records) == sorted(reference)
    for chip, (pixels, mask) in reference.items():
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(records[chip]["image/encoded"]))), pixels), chip
        assert np.array_equal(records[chip]["mask"], mask), chip


def test_the_raster_job_builds_as_a_dataflow_template(tmp_path, scene_and_labels, gcs_bucket):
    from tests.helpers import dataflow_args, staged_pipeline_transforms, upload_tree
    prefix = f"gs://{gcs_bucket}/raster-template"
    upload_tree(tmp_path / "scenes", f"{prefix}/scenes")
    upload_tree(tmp_path / "labels", f"{prefix}/labels")
    raster_to_tfrecord.run(["--scenes", f"{prefix}/scenes/*.tif", "--labels", f"{prefix}/labels/*.tif",
                            "--mask_colors", str(tmp_path / "colors.json"), "--output_dir", f"{prefix}/out",
                            *dataflow_args(gcs_bucket, tmp_path)])
    names = staged_pipeline_transforms(tmp_path / "template.json")
    assert {"PairScenes", "PlanChips", "Chip", "WriteIndex", "WriteSegmentationDataset/WriteShards"} <= names
