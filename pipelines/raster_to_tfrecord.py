"""GeoTIFF scenes + label rasters -> chips -> sharded TFRecords (``segpipe dataset raster``).

    segpipe dataset raster --scenes 'SCENES/*.tif' --labels 'LABELS/*.tif' --mask_colors COLORS.json \\
        --output_dir OUT [--chip_size 512] [--stride 512] [--bands 4,3,2] [--max_nodata 0.5] \\
        [--val_fraction 0.1] [Beam options]

Scenes and label rasters pair by file stem (``--scene_key_regex`` / ``--label_key_regex`` as in
the pairs job). A label raster must share its scene's grid (CRS, transform, size); one that does
not is an error record (``labels_do_not_align``; label rasters are not reprojected). Vector
labels (``--vectors``: GeoJSON, or GeoPackage/Shapefile through fiona) are reprojected to each
scene's CRS and rasterized per chip (VectorLabels). Each scene's header is read once to plan its chips (``--chip_size``
windows every ``--stride`` pixels, the last row and column flush with the edge); the chips, only
their descriptions, are spread over the workers, and each worker reads its chip's two windows.

One pixel path with batch segmentation: a chip's pixels come from ``pipelines.common.rasters``'s
``open_geotiff`` (band choice, and for non-8-bit scenes the per-scene 2nd-98th percentile
stretch) and ``read_window``, the functions ``segpipe segment`` reads its windows with, so a
model sees the same pixel values in training and inference. Mask rules: ``--mask_colors`` as in
``masks_to_tfrecord`` (COLORS.json or a VOC/CVAT labelmap.txt); 255 where the scene or the label raster is nodata; a chip with more than
``--max_nodata`` of 255 pixels is skipped and counted (``chips_skipped/nodata``), and so is one
with less than ``--min_labelled`` of pixels of a class other than 0 (``chips_skipped/unlabelled``,
off by default); an unmapped label
value is an error record for that chip.

Each record also holds where its chip lies: ``image/geo/scene``, ``image/geo/crs``,
``image/geo/window`` ("row,col,height,width") and ``image/geo/transform`` (the chip's affine, six
comma-separated numbers), all strings. OUT gets the dataset (shards, dataset.json, stats.json,
classes.json, errors.jsonl) and
``chips.geojson``: one feature per written chip, its footprint in WGS84 (RFC 7946) and as
properties the scene, the window (row, col, height, width), the split, the scene CRS and the
chip's own affine transform. Chip images are PNG (written under ``OUT/.staging/chips`` for the
shard writer to read back, then removed).
"""
from __future__ import annotations

import io
import json
import logging
import re

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from pipelines.common import images as image_checks
from pipelines.common import rasters
from pipelines.dataset.splits import split_for
from pipelines.dataset.job import checked_config, run_dataset_job
from pipelines.dataset.commit import STAGING, remove_empty_staging
from pipelines.dataset.writer import RecordRef, WriteSegmentationDataset, pixel_stats, reject_image
from pipelines.dataset.colors import ColorMap, load_color_map, pair_key
from pipelines.common.runner import ERRORS, STATS, count, error_record
from pipelines.common.storage import write_atomic, write_json
from segcli.raster import RasterConfig, make_parser
from segformat import records
from segformat.masks import IGNORE_INDEX, class_pixel_counts
from segmodel.tiling import window_starts  # NumPy only: dataset workers load no TensorFlow

LOG = logging.getLogger(__name__)
INDEX = "index"


def chip_windows(height: int, width: int, chip: int, stride: int) -> list:
    """[(row, col, h, w)]: the chips of a scene (a scene smaller than a chip is one smaller chip)."""
    return [(r, c, min(chip, height - r), min(chip, width - c))
            for r in window_starts(height, chip, stride) for c in window_starts(width, chip, stride)]


def chip_transform(info, row: int, col: int):
    """The affine transform of the chip whose top-left pixel is (row, col) of the scene ``info``."""
    from rasterio.transform import Affine
    return Affine(*info.transform) * Affine.translation(col, row)


def check_alignment(info, label: str) -> None:
    """Refuses a label raster that is not on the grid of the scene ``info`` (its header, read once
    by rasters.open_geotiff): the same size, CRS and transform."""
    from rasterio.crs import CRS
    with rasters.open_raster(label) as lab:
        same_crs = (CRS.from_string(info.crs) == lab.crs) if info.crs else not lab.crs
        if not ((info.width, info.height) == (lab.width, lab.height) and same_crs and info.transform is not None
                and np.allclose(info.transform, tuple(lab.transform)[:6], rtol=0, atol=1e-9)):
            raise image_checks.ImageError(
                "labels_do_not_align", f"labels {lab.width}x{lab.height} {lab.crs} {tuple(lab.transform)[:6]} "
                f"!= scene {info.width}x{info.height} {info.crs} {info.transform}")


SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def read_vector_file(path: str) -> tuple:
    """(CRS, [(GeoJSON-like geometry or None, properties)]) of a vector file. GeoJSON is read as
    JSON (WGS84 per RFC 7946 unless a legacy ``crs`` member names another); GeoPackage,
    Shapefile and the rest of what GDAL reads go through fiona (``pip install fiona``, in the
    ``vectors`` extra), from a local copy when the file is remote (a Shapefile with its side files)."""
    if path.lower().endswith((".geojson", ".json")):
        with FileSystems.open(path) as handle:
            doc = json.loads(handle.read())
        crs = ((doc.get("crs") or {}).get("properties") or {}).get("name") or "EPSG:4326"
        return crs, [(f.get("geometry"), f.get("properties")) for f in doc.get("features", [])]
    try:
        import fiona
    except ImportError:
        raise ValueError(f"{path}: reading GeoPackage or Shapefile labels needs fiona (pip install fiona); "
                         "GeoJSON needs nothing more") from None
    import os
    import shutil
    import tempfile
    workdir = None
    local = path
    if "://" in path:
        workdir = tempfile.mkdtemp(prefix="segpipe-vectors-")
        stem, ext = path.rsplit(".", 1)
        parts = SHAPEFILE_PARTS if f".{ext.lower()}" == ".shp" else (f".{ext}",)
        for part in parts:
            if FileSystems.exists(stem + part):
                with FileSystems.open(stem + part) as src, open(os.path.join(workdir, "labels" + part), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        local = os.path.join(workdir, "labels." + ext)
    try:
        with fiona.open(local) as source:
            crs = source.crs.to_string() if source.crs else "EPSG:4326"
            features = [(dict(f.geometry.__geo_interface__) if f.geometry is not None else None, dict(f.properties))
                        for f in source]
        return crs, features
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def geometry_problem(geometry: dict):
    """A reason to leave a polygon out, or None: no coordinates, or not a valid polygon by the
    OGC rules as GEOS checks them (shapely's ``is_valid_reason``): a ring that crosses or touches
    itself (GDAL would burn a bow-tie's two lobes by its own rule, not as anybody drew it), a hole
    outside its shell, too few points. Ring winding is not a problem: Shapefiles wind outer
    rings clockwise, GeoJSON counter-clockwise, and rasterizing does not depend on it."""
    if not geometry or not geometry.get("coordinates"):
        return "no_geometry"
    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        return None
    import shapely
    from shapely.geometry import shape
    try:
        polygon = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.GEOSException) as error:
        return f"malformed_geometry: {error}"[:200]
    why = shapely.is_valid_reason(polygon)
    if why == "Valid Geometry":
        return None
    kind = "self_intersection" if "Self-intersection" in why else "invalid_polygon"
    return f"{kind}: {why}"[:200]


class VectorLabels:
    """Labelled polygons from a vector file (read_vector_file; once per worker), rasterized onto
    any grid. A
    feature's class is its ``attribute``: a value COLORS.json maps (single values), or a class
    name from its ``classes``. Features are burnt in file order (a later one on top), pixels
    whose centre falls inside (rasterio.features.rasterize); the rest is class 0 (background).
    Features without a geometry, with a self-intersecting ring or with an unknown class are left
    out and reported (vector_errors)."""

    def __init__(self, path: str, attribute: str, color_map: ColorMap):
        self.crs, features = read_vector_file(path)
        by_value = {color[0]: index for color, index in color_map.colors} if color_map.channels == 1 else {}
        by_name = {name: k for k, name in enumerate(color_map.names)}
        self.features, self.skipped = [], []  # skipped: [(feature number, reason)]
        for number, (geometry, properties) in enumerate(features):
            value = (properties or {}).get(attribute)
            index = by_value.get(value) if isinstance(value, (int, float)) and value == int(value) else None
            index = by_name.get(str(value)) if index is None else index
            reason = geometry_problem(geometry) or ("unknown_class" if index is None else None)
            if reason:
                self.skipped.append((number, f"{reason}: {attribute}={value!r}" if reason == "unknown_class" else reason))
                continue
            self.features.append((geometry, index))
        self._projected = {}

    def rasterize(self, crs: str, transform, height: int, width: int) -> np.ndarray:
        from rasterio.features import rasterize
        from rasterio.warp import transform_geom
        if crs not in self._projected:
            self._projected[crs] = [(transform_geom(self.crs, crs, g), k) for g, k in self.features]
        shapes = self._projected[crs]
        if not shapes:
            return np.zeros((height, width), np.uint8)
        return rasterize(shapes, out_shape=(height, width), transform=transform, fill=0, dtype="uint8")


def vector_errors(path: str, attribute: str, color_map: ColorMap):
    """Error records for the features of a vector file that cannot be burnt (read once, here)."""
    for number, reason in VectorLabels(path, attribute, color_map).skipped:
        count("features_skipped")
        yield error_record(f"{path}#feature{number}", reason.split(":")[0], reason)


class PlanChipsFn(beam.DoFn):
    """(key, {scene: [path], labels: [path]}) -> chip descriptions, or an error record."""

    def __init__(self, config: RasterConfig, scenes_root: str):
        self.config, self.scenes_root = config, scenes_root

    def process(self, element):
        key, grouped = element
        scenes, labels = sorted(grouped["scene"]), sorted(grouped["labels"])
        if len(scenes) != 1 or len(labels) != 1:
            reason = "scene_without_labels" if not labels else "labels_without_scene" if not scenes else "ambiguous_pair"
            yield from reject_image((scenes or labels)[0], reason, f"key {key!r}: scenes {scenes}, labels {labels}")
            return
        scene, label = scenes[0], labels[0]
        rel = image_checks.relative_to(scene, self.scenes_root).rsplit(".", 1)[0]
        try:
            info = rasters.open_geotiff(scene, rel, self.config.bands)
            if self.config.vectors:
                if not info.crs:
                    raise image_checks.ImageError("scene_without_crs", "vector labels need the scene's CRS")
                label = None
            else:
                check_alignment(info, label)
        except image_checks.ImageError as e:
            yield from reject_image(f"{scene} + {label}", e.reason, e.detail)
            return
        except Exception as e:  # an unreadable label raster, a band the scene lacks
            yield from reject_image(f"{scene} + {label}", "unreadable_raster", str(e)[:300])
            return
        windows = chip_windows(info.height, info.width, self.config.chip_size, self.config.stride)
        count("chips_planned", len(windows))
        for row, col, h, w in windows:
            yield scene, label, info, (row, col, h, w)


class ChipFn(beam.DoFn):
    """A chip description -> (split, chip id, RecordRef) with its stats and index feature."""

    def __init__(self, config: RasterConfig, color_map: ColorMap, output_dir: str):
        self.config, self.color_map, self.output_dir = config, color_map, output_dir
        self._open = {}
        self.vectors = None

    def setup(self):
        if self.config.vectors:
            self.vectors = VectorLabels(self.config.vectors, self.config.class_attribute, self.color_map)

    def _raster(self, path):
        if path not in self._open:
            if len(self._open) >= 4:  # a few scenes open per worker: chips of one scene come together
                for handle in self._open.values():
                    handle.close()
                self._open.clear()
            self._open[path] = rasters.open_raster(path)
        return self._open[path]

    def teardown(self):
        for handle in self._open.values():
            handle.close()

    def _vector_mask(self, info, row: int, col: int, h: int, w: int) -> np.ndarray:
        return self.vectors.rasterize(info.crs, chip_transform(info, row, col), h, w)

    def _raster_mask(self, label: str, row: int, col: int, h: int, w: int) -> np.ndarray:
        from rasterio.windows import Window
        lab = self._raster(label)
        window = Window(col, row, w, h)
        raw = lab.read(window=window).transpose(1, 2, 0)
        raw = raw[..., 0].copy() if self.color_map.channels == 1 else raw[..., :3].copy()
        no_label = lab.dataset_mask(window=window) == 0
        raw[no_label] = self.color_map.colors[0][0] if self.color_map.channels == 3 else \
            self.color_map.colors[0][0][0]  # any mapped value: these pixels become 255 below
        mask = self.color_map.apply(raw)
        mask[no_label] = IGNORE_INDEX
        return mask

    def process(self, job):
        from PIL import Image
        scene, label, info, (row, col, h, w) = job
        chip_id = f"{info.rel}/r{row:06d}_c{col:06d}"
        try:
            pixels, valid = rasters.read_window(self._raster(scene), info, row, col, h, w)
            mask = self._vector_mask(info, row, col, h, w) if self.vectors is not None else \
                self._raster_mask(label, row, col, h, w)
            mask[~valid] = IGNORE_INDEX
        except image_checks.ImageError as e:
            yield from reject_image(chip_id, e.reason, e.detail, scene=scene)
            return
        except Exception as e:
            yield from reject_image(chip_id, "unreadable_raster", str(e)[:300], scene=scene)
            return
        skip = "nodata" if (mask == IGNORE_INDEX).mean() > self.config.max_nodata else \
            "unlabelled" if ((mask != 0) & (mask != IGNORE_INDEX)).mean() < self.config.min_labelled else None
        if skip:
            count(f"chips_skipped/{skip}")
            yield beam.pvalue.TaggedOutput(STATS, {f"chips_skipped/{skip}": 1})
            return
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = f"{self.output_dir}/{STAGING}/chips/{chip_id}.png"
        write_atomic(path, data, "image/png")
        split = split_for(chip_id, self.config.val_fraction, self.config.split)
        count("images_written")
        stats = {"images_written": 1, f"images_written/{split}": 1}
        stats.update(pixel_stats(class_pixel_counts(mask)))
        yield beam.pvalue.TaggedOutput(STATS, stats)
        feature = chip_feature(info, chip_id, row, col, h, w, split)
        yield beam.pvalue.TaggedOutput(INDEX, feature)
        geo = ((records.GEO_SCENE, info.source), (records.GEO_CRS, info.crs or ""),
               (records.GEO_WINDOW, f"{row},{col},{h},{w}"),
               (records.GEO_TRANSFORM, ",".join(repr(v) for v in feature["properties"]["transform"])))
        yield split, chip_id, RecordRef.of(path, data, fmt="png", height=h, width=w, filename=f"{chip_id}.png",
                                           source_id=chip_id, mask_png=image_checks.encode_mask_png(mask), extra=geo)


def chip_feature(info, chip_id: str, row: int, col: int, h: int, w: int, split: str) -> dict:
    """A GeoJSON feature of a chip: its footprint in WGS84 and where it came from."""
    from rasterio.warp import transform_geom
    transform = chip_transform(info, row, col)
    corners = [transform * (x, y) for x, y in ((0, 0), (w, 0), (w, h), (0, h), (0, 0))]
    geometry = {"type": "Polygon", "coordinates": [[list(p) for p in corners]]}
    if info.crs:
        geometry = transform_geom(info.crs, "EPSG:4326", geometry)
    return {"type": "Feature", "geometry": geometry,
            "properties": {"chip": chip_id, "scene": info.source, "row": row, "col": col, "height": h, "width": w,
                           "split": split, "crs": info.crs, "transform": list(tuple(transform)[:6])}}


def write_index(features: list, output_dir: str) -> None:
    features = sorted(features, key=lambda f: f["properties"]["chip"])
    write_json(f"{output_dir}/chips.geojson", {"type": "FeatureCollection", "features": features})
    from pipelines.common.stac import chips_catalog
    chips_catalog(features, output_dir)  # OUT/stac: the same chips as STAC Items


def build_records(p, config: RasterConfig, color_map: ColorMap) -> dict:
    """The raster job's records (chips), error records, stats and class table
    (WriteSegmentationDataset's inputs), and the chip index written beside them."""
    def keyed(kind, pattern, regex):
        compiled = re.compile(regex)
        return (p | f"Match{kind}" >> fileio.MatchFiles(pattern, empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
                | f"Path{kind}" >> beam.Map(lambda m: m.path)
                | f"Key{kind}" >> beam.Map(lambda path: (pair_key(path, compiled) or path, path)))
    if config.vectors:  # every scene with the one vector file
        pairs = (keyed("Scenes", config.scenes, config.scene_key_regex)
                 | "WithVectors" >> beam.Map(lambda kv: (kv[0], {"scene": [kv[1]], "labels": [config.vectors]})))
    else:
        pairs = ({"scene": keyed("Scenes", config.scenes, config.scene_key_regex),
                  "labels": keyed("Labels", config.labels, config.label_key_regex)}
                 | "PairScenes" >> beam.CoGroupByKey())
    planned = pairs | "PlanChips" >> beam.ParDo(PlanChipsFn(config, image_checks.glob_root(config.scenes))
                                                 ).with_outputs(ERRORS, STATS, main="chips")
    chips = (planned.chips | "Spread" >> beam.Reshuffle()
             | "Chip" >> beam.ParDo(ChipFn(config, color_map, config.output_dir)).with_outputs(
                 ERRORS, STATS, INDEX, main="records"))
    _ = (chips[INDEX] | "CollectIndex" >> beam.combiners.ToList()
         | "WriteIndex" >> beam.Map(write_index, config.output_dir))
    sources = [planned[ERRORS], chips[ERRORS]]
    if config.vectors:
        sources.append(p | "VectorFile" >> beam.Create([config.vectors])
                       | "VectorErrors" >> beam.FlatMap(vector_errors, config.class_attribute, color_map))
    errors = tuple(sources) | "AllErrors" >> beam.Flatten()
    stats = (planned[STATS], chips[STATS]) | "AllStats" >> beam.Flatten()
    classes = p | "Classes" >> beam.Create([color_map.classes_json()])
    return {"records": chips.records, "errors": errors, "stats": stats, "classes": classes}


def build_pipeline(p, config: RasterConfig, color_map: ColorMap, description=None):
    return build_records(p, config, color_map) | WriteSegmentationDataset(config.output_dir, config.num_shards,
                                                                          description=description)


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    config = checked_config("segpipe dataset raster", lambda: RasterConfig(**vars(known)))
    color_map = load_color_map(config.mask_colors)
    try:
        return run_dataset_job(
            "raster_to_tfrecord", "segpipe dataset raster", vars(known), beam_args, output_dir=config.output_dir,
            inputs=[p for p in (config.scenes, config.labels) if p], split=config.split, overwrite=config.overwrite,
            build=lambda p, description: build_pipeline(p, config, color_map, description=description),
            test_pipeline=test_pipeline, save_main_session=save_main_session)
    finally:
        chips = [m.path for m in FileSystems.match([f"{config.output_dir}/{STAGING}/chips/**"])[0].metadata_list]
        if chips:
            FileSystems.delete(chips)
        remove_empty_staging(config.output_dir)  # the (local) folder the chips were in

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
