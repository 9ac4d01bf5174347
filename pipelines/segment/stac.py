"""STAC for what batch segmentation wrote: ``OUT/stac/collection.json`` and one Item per
segmented GeoTIFF (``OUT/stac/items/REL.json``), made with pystac.

An Item: its datetime (the source's TIFFTAG_DATETIME, else the source file's modification time:
``segpipe:datetime_from`` says which), the raster's footprint and bbox in WGS84 (from the mask's own header), the projection
extension (the CRS's EPSG code, or its WKT2, the transform and shape), the classification extension
on the mask asset naming every class value (and 255: nodata), and assets with roles and media
types: the mask COG (``data``), the scores COG with ``--scores`` (``data``, ``confidence``), the
class probabilities COG with ``--scores all`` (``data``, ``probabilities``), the
input's record (``metadata``). Asset hrefs are relative to the Item, so the folder can be moved or
copied to a bucket whole. Photos and GeoTIFFs without a CRS get no Item (a STAC Item's geometry
is in WGS84, which a raster without a CRS cannot be placed in; their masks are listed in
summary.jsonl). pystac is imported here only: a job without STAC output never loads it.
"""
from __future__ import annotations

import posixpath

from pipelines.common.stac import EDGE_POINTS, acquired, relative, set_projection, write_collection
from segformat.masks import IGNORE_INDEX, background_index

COG = "image/tiff; application=geotiff; profile=cloud-optimized"



def raster_item(record: dict, scores: str | None, item_href: str, class_names, model_version: str,
                vectors: str | None = None, probabilities: str | None = None):
    """The STAC Item of one segmented GeoTIFF's record (its mask header read for the grid); None
    for a raster without a CRS."""
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from rasterio.warp import transform_bounds, transform_geom

    from pipelines.common import rasters
    with rasters.open_raster(record["mask"]) as src:
        crs, transform, shape, bounds = src.crs, src.transform, (src.height, src.width), src.bounds
    if crs is None:
        return None
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=EDGE_POINTS)
    corners = [(bounds.left, bounds.bottom), (bounds.right, bounds.bottom), (bounds.right, bounds.top),
               (bounds.left, bounds.top), (bounds.left, bounds.bottom)]
    ring = [(x0 + (x1 - x0) * k / EDGE_POINTS, y0 + (y1 - y0) * k / EDGE_POINTS)  # edges bend once reprojected
            for (x0, y0), (x1, y1) in zip(corners, corners[1:]) for k in range(EDGE_POINTS)] + [corners[0]]
    geometry = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    item_id = posixpath.splitext(record["file_name"])[0]
    when, how = acquired(record["input"])
    item = pystac.Item(id=item_id, geometry=geometry, bbox=[west, south, east, north], datetime=when,
                       properties={"segpipe:model_version": model_version, "segpipe:source": record["input"],
                                   "segpipe:datetime_from": how, "segpipe:mean_confidence": record["mean_confidence"]})
    set_projection(item, crs, transform, shape)
    folder = posixpath.dirname(item_href)
    mask = pystac.Asset(relative(record["mask"], folder), title="class mask", media_type=COG, roles=["data"])
    item.add_asset("mask", mask)
    background = background_index(class_names)
    classes = [Classification.create(value=i, name=name.replace(" ", "_").lower() or f"class_{i}", description=name)
               for i, name in enumerate(class_names)]
    classes.append(Classification.create(value=IGNORE_INDEX, name="nodata", description="no data", nodata=True))
    ClassificationExtension.ext(mask, add_if_missing=True).classes = classes
    if scores:
        item.add_asset("scores", pystac.Asset(relative(scores, folder), title="top-class probability x 255",
                                              media_type=COG, roles=["data", "confidence"]))
    if probabilities:  # band k + 1 is class k (the bands carry the class names too)
        item.add_asset("probabilities", pystac.Asset(
            relative(probabilities, folder), title="class probabilities x 255, one band per class",
            description="bands in the class table's order: " + ", ".join(class_names), media_type=COG,
            roles=["data", "probabilities"]))
    if vectors:
        media = {".geojson": pystac.MediaType.GEOJSON, ".gpkg": "application/geopackage+sqlite3",
                 ".fgb": "application/vnd.flatgeobuf"}[posixpath.splitext(vectors)[1]]
        item.add_asset("vectors", pystac.Asset(relative(vectors, folder), title="polygons per region and class",
                                               media_type=media, roles=["data"]))
    item.add_asset("record", pystac.Asset(relative(posixpath.splitext(record["mask"])[0] + ".json", folder),
                                          title="segpipe record", media_type=pystac.MediaType.JSON,
                                          roles=["metadata"]))
    item.properties["segpipe:background"] = class_names[background] if background is not None else None
    return item


def write_catalog(records, spec, model_version: str) -> int:
    """OUT/stac/collection.json and an Item per GeoTIFF record of a batch segmentation written as
    ``spec`` (an OutputSpec: which outputs exist) says, atomically; returns the Items' count."""
    from pipelines.segment.outputs import probabilities_path, scores_path, vectors_path
    root = f"{spec.output_dir}/stac"
    items = []
    for record in records:
        if not record["mask"].endswith(".tif"):
            continue
        rel = posixpath.splitext(record["file_name"])[0]
        href = f"{root}/items/{rel}.json"
        item = raster_item(record, scores_path(spec, rel, "geotiff") if spec.scores else None, href,
                           spec.class_names, model_version, vectors_path(spec, rel) if spec.vectors else None,
                           probabilities_path(spec, rel) if spec.scores == "all" else None)
        if item is not None:
            items.append((href, item))
    items.sort(key=lambda pair: pair[0])  # the same order on every run
    # named by the model, not the folder: the same run into another folder writes the same files
    return write_collection(root, f"segpipe-segmentation-{model_version or 'model'}",
                            f"segpipe segment output ({model_version})", items,
                            {"segpipe:classes": list(spec.class_names)})
