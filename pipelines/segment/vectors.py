"""Polygons from predicted masks (``segpipe segment --vectors``): one feature per connected region
of a class, in the raster's CRS (photos: pixel coordinates), merged across chunk borders.

Each chunk is polygonized on its own with rasterio's ``features.shapes`` (GDAL's polygonize,
4-connected as GDAL's default), in the raster's pixel grid. A region that touches a border the
chunk shares with a neighbour may continue there: such pieces are kept apart, and when the
raster's chunks are merged, the pieces of each class are united with shapely (pieces that share
an edge become one polygon) and their pixel counts and confidence sums added. Everything is in
pixel units until the end, so the union is exact (pixel edges meet exactly). Only polygons travel
(as part files, never through a shuffle), so memory stays bounded by a chunk and its polygons.
"""
from __future__ import annotations

import json
import os

import numpy as np

from segformat.masks import IGNORE_INDEX


def connected_regions(mask: np.ndarray, skip=(), connectivity: int = 4, offset=(0, 0)) -> list:
    """[(class index, geometry as GeoJSON in pixel coordinates, (x0, y0, x1, y1))] for each
    connected region of a class mask whose top-left pixel is at ``offset`` (column, row) of the
    image, the classes in ``skip`` and 255 left out."""
    import rasterio.features
    from rasterio.transform import Affine
    # the classes left out and 255 masked out: polygonize traces nothing there (the regions of the
    # classes kept are the same: a region is one class's pixels, connected among themselves)
    keep = np.isin(mask, np.asarray(tuple(skip) + (IGNORE_INDEX,), dtype=mask.dtype), invert=True)
    regions = []
    for geometry, value in rasterio.features.shapes(mask, mask=keep, connectivity=connectivity,
                                                    transform=Affine.translation(*offset)):
        outer = geometry["coordinates"][0]  # the exterior ring holds the holes
        xs = [x for x, _ in outer]
        ys = [y for _, y in outer]
        regions.append((int(value), geometry, (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))))
    return regions


def region_pixels(geometry: dict, box: tuple) -> np.ndarray:
    """The region's pixels inside its box (pixel centres inside the outline: exactly the pixels
    polygonize traced)."""
    import rasterio.features
    from rasterio.transform import Affine
    x0, y0, x1, y1 = box
    return rasterio.features.rasterize([(geometry, 1)], out_shape=(y1 - y0, x1 - x0),
                                       transform=Affine.translation(x0, y0), dtype=np.uint8).astype(bool)


def chunk_pieces(mask: np.ndarray, confidence: np.ndarray, core: tuple, height: int, width: int, skip=(),
                 min_area: int = 0) -> list:
    """The regions of one chunk's mask (rows r0..r1, columns c0..c1 of a height x width raster):
    [{"class", "geometry" (GeoJSON in the raster's pixel coordinates), "box" (x0, y0, x1, y1),
    "pixels", "confidence_sum", "border" (it touches a border shared with another chunk)}].
    A region inside the chunk (no border) is whole, so one under ``min_area`` pixels is left out
    here; a border piece is kept whatever its size (its region's size is known after the merge).

    The pixels and confidence of every region come from one label image (each region's outline
    burnt with its own number: pixel centres inside an outline are exactly the pixels polygonize
    traced), not a pass per region."""
    import rasterio.features
    from rasterio.transform import Affine
    r0, r1, c0, c1 = core
    regions = connected_regions(mask, skip, connectivity=4, offset=(c0, r0))
    if not regions:
        return []
    labels = rasterio.features.rasterize(((geometry, k + 1) for k, (_, geometry, _) in enumerate(regions)),
                                         out_shape=mask.shape, transform=Affine.translation(c0, r0), fill=0,
                                         dtype=np.int32)
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=len(regions) + 1)
    confidence_sums = np.bincount(flat, weights=confidence.ravel(), minlength=len(regions) + 1) / 255.0
    pieces = []
    for k, (index, geometry, (x0, y0, x1, y1)) in enumerate(regions, start=1):
        border = (x0 == c0 and c0 > 0) or (x1 == c1 and c1 < width) or (y0 == r0 and r0 > 0) or \
            (y1 == r1 and r1 < height)
        if not border and pixels[k] < min_area:
            continue
        pieces.append({"class": index, "geometry": geometry, "box": (x0, y0, x1, y1), "pixels": int(pixels[k]),
                       "confidence_sum": float(confidence_sums[k]), "border": bool(border)})
    return pieces


def merge_pieces(pieces: list) -> list:
    """Pieces from all chunks -> regions: the border pieces of each class united (shapely), their
    pixels and confidence sums added; the others as they are."""
    import shapely
    from shapely.geometry import mapping, shape
    regions = [p for p in pieces if not p["border"]]
    by_class = {}
    for piece in pieces:
        if piece["border"]:
            by_class.setdefault(piece["class"], []).append(piece)
    for index, group in sorted(by_class.items()):
        shapes = [shape(p["geometry"]) for p in group]
        united = shapely.unary_union(shapes)
        parts = list(getattr(united, "geoms", [united]))
        tree = shapely.STRtree(parts)
        totals = [[0, 0.0] for _ in parts]
        for piece, geometry in zip(group, shapes):
            (k,) = tree.query(geometry.representative_point(), predicate="within")[:1]
            totals[k][0] += piece["pixels"]
            totals[k][1] += piece["confidence_sum"]
        for part, (pixels, confidence_sum) in zip(parts, totals):
            regions.append({"class": index, "geometry": mapping(part), "box": tuple(int(v) for v in part.bounds),
                            "pixels": pixels, "confidence_sum": confidence_sum, "border": False})
    return regions


def feature_collection(regions: list, class_names, transform=None, crs: str = "", source: str = "",
                       min_area: int = 0, simplify: float = 0.0) -> dict:
    """Regions in pixel coordinates -> a GeoJSON FeatureCollection in the raster's CRS (``transform``:
    its affine, pixel -> CRS; None or the identity: pixel coordinates). ``min_area`` in pixels; ``simplify``: a
    tolerance in pixels, topology-preserving (shapely), holes kept."""
    import shapely
    from shapely.geometry import mapping, shape
    if transform is not None and transform.is_identity:  # no geotransform (GDAL's default): pixels
        transform = None
    features = []
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d) if transform is not None else 1.0
    for region in sorted(regions, key=lambda r: (r["class"], -r["pixels"], tuple(r["box"]))):
        if region["pixels"] < max(min_area, 1):
            continue
        geometry = shape(region["geometry"])
        if simplify > 0:
            geometry = geometry.simplify(simplify, preserve_topology=True)
        if transform is not None:
            geometry = shapely.affinity.affine_transform(geometry, [transform.a, transform.b, transform.d,
                                                                    transform.e, transform.c, transform.f])
        features.append({"type": "Feature", "geometry": mapping(geometry), "properties": {
            "class": class_names[region["class"]], "class_index": region["class"],
            "area_pixels": region["pixels"], "area": region["pixels"] * pixel_area,
            "mean_confidence": region["confidence_sum"] / max(region["pixels"], 1), "source": source}})
    # said in the file: "crs" (the raster's CRS), "transform" (a raster with a geotransform but no
    # CRS: the transform's coordinates, so the polygons lie on its mask in a GIS; area in its
    # units), "pixels" (a photo, or a raster with neither)
    coordinates = "pixels" if transform is None else "crs" if crs else "transform"
    collection = {"type": "FeatureCollection", "features": features, "segpipe:coordinates": coordinates}
    if coordinates == "crs":  # GDAL and QGIS read a named CRS member (GeoJSON 2008) beside RFC 7946's WGS84 default
        from rasterio.crs import CRS
        epsg = CRS.from_user_input(crs).to_epsg()
        if epsg is not None:
            collection["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}
    return collection


# A polygon layer's fields (per raster and job-wide): a region is one Polygon, holes kept (the
# union of a region's pieces is split into its polygons, simplification preserves topology).
LAYER_SCHEMA = {"geometry": "Polygon", "properties": {
    "class": "str", "class_index": "int", "area_pixels": "int", "area": "float", "mean_confidence": "float",
    "source": "str"}}
LAYER = "segments"  # the layer's name (GeoPackage, FlatGeobuf) and the job-wide file's stem


def _fiona():
    try:
        import fiona
    except ImportError:
        raise RuntimeError("segpipe segment --vectors needs fiona (installed with segpipe): pip install fiona") from None
    return fiona


def _open_layer(local: str, driver: str, crs, layer: str):
    # SQLite builds without the rtree module exist (fiona's wheels beside rasterio's): no spatial index
    options = {"SPATIAL_INDEX": "NO"} if driver == "GPKG" else {}
    return _fiona().open(local, "w", driver=driver, schema=LAYER_SCHEMA, crs=crs, layer=layer, **options)


def write_layer(local: str, driver: str, collection: dict, crs: str | None) -> None:
    """A feature collection as an OGR layer file (GeoPackage, FlatGeobuf) through fiona."""
    with _open_layer(local, driver, crs, LAYER) as layer:
        layer.writerecords({"geometry": f["geometry"], "properties": f["properties"]} for f in collection["features"])


def crs_key(crs, known: dict) -> str:
    """A layer-name suffix for a CRS: epsg_32633, crs_1.. for a CRS without an EPSG code (by first
    appearance), no_crs for photos and rasters without a CRS (pixel or transform coordinates)."""
    if not crs:
        return "no_crs"
    epsg = crs.to_epsg()
    if epsg is not None:
        return f"epsg_{epsg}"
    return known.setdefault(crs.to_wkt(), f"crs_{len(known) + 1}")


def job_layers(paths: list, output_dir: str, vector_format: str) -> list:
    """The job-wide polygon layer from the per-input files ``paths`` (in the order given), read
    and written one input at a time with fiona (memory: one input's polygons): every feature in
    one layer ``segments``, or, when the inputs lie in several coordinate systems (one layer holds
    one CRS), a layer per system, ``segments_epsg_32633``, ``segments_no_crs``...: in one
    GeoPackage, as files ``segments_KEY.EXT`` for the single-layer formats. Each file is written
    locally and moved into place atomically; returns the paths written."""
    import shutil
    import tempfile

    from apache_beam.io.filesystems import FileSystems

    from pipelines.common.storage import upload_atomic
    from segcli.segment import VECTOR_FORMATS
    fiona = _fiona()
    suffix, driver = VECTOR_FORMATS[vector_format]
    workdir = tempfile.mkdtemp(prefix="segpipe-layers-")
    try:
        local_inputs, known = [], {}
        for k, path in enumerate(paths):  # a local copy each (fiona reads no gs://), and its CRS
            local = os.path.join(workdir, f"input-{k}{suffix}")
            with FileSystems.open(path) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            with fiona.open(local) as layer:
                local_inputs.append((local, layer.crs, crs_key(layer.crs, known)))
        keys = sorted({key for *_, key in local_inputs}) or ["no_crs"]
        names = {key: LAYER if len(keys) == 1 else f"{LAYER}_{key}" for key in keys}
        crs_of = {key: crs for _, crs, key in local_inputs}
        written = {}  # layer -> local file
        for key in keys:
            target = os.path.join(workdir, (LAYER if driver == "GPKG" else names[key]) + suffix)
            with _open_layer(target, driver, crs_of.get(key) or None, names[key]) as out:
                for local, _, input_key in local_inputs:
                    if input_key == key:
                        with fiona.open(local) as layer:
                            out.writerecords({"geometry": f["geometry"], "properties": dict(f["properties"])}
                                             for f in layer)
            written[names[key]] = target
        results = []
        for target in sorted(set(written.values())):
            path = f"{output_dir}/{os.path.basename(target)}"
            upload_atomic(target, path, "application/octet-stream")
            results.append(path)
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_pieces(path: str, pieces: list) -> None:
    from pipelines.common.storage import write_atomic
    write_atomic(path, json.dumps(pieces).encode(), "application/json")


def read_pieces(path: str) -> list:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())
