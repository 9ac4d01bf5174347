"""STAC for what batch segmentation wrote: ``OUT/stac/collection.json`` and one Item per
segmented GeoTIFF (``OUT/stac/items/REL.json``), made with pystac.

An Item: its datetime (the source's TIFFTAG_DATETIME, else the source file's modification time:
``segpipe:datetime_from`` says which), the raster's footprint and bbox in WGS84 (from the mask's own header), the projection
extension (the CRS's EPSG code, or its WKT2, the transform and shape), the classification extension
on the mask asset naming every class value (and 255: nodata), and assets with roles and media
types: the mask COG (``data``), the scores COG with ``--scores`` (``data``, ``confidence``), the
input's record (``metadata``). Asset hrefs are relative to the Item, so the folder can be moved or
copied to a bucket whole. Photos have no CRS and get no Item (their masks are listed in
summary.jsonl). pystac is imported here only: a job without STAC output never loads it.
"""
from __future__ import annotations

import datetime
import json
import posixpath

from pipelines.common.stac import EDGE_POINTS, acquired, relative
from segformat.masks import IGNORE_INDEX, background_index

COG = "image/tiff; application=geotiff; profile=cloud-optimized"



def raster_item(record: dict, scores: str | None, item_href: str, class_names, model_version: str,
                vectors: str | None = None):
    """The STAC Item of one segmented GeoTIFF's record (its mask header read for the grid)."""
    import pystac
    import rasterio
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.warp import transform_bounds, transform_geom

    from pipelines.common import rasters
    with rasters.open_raster(record["mask"]) as src:
        crs, transform, shape, bounds = src.crs, src.transform, (src.height, src.width), src.bounds
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
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg is not None:
        projection.code = f"EPSG:{epsg}"
    else:
        projection.wkt2 = crs.to_wkt()
    projection.transform = list(transform)[:6]
    projection.shape = list(shape)
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


def write_catalog(records, output_dir: str, class_names, model_version: str, scores: bool,
                  vectors: bool = False) -> int:
    """OUT/stac/collection.json and an Item per GeoTIFF record (atomically); returns the Items' count."""
    import pystac

    from pipelines.common.storage import write_atomic
    from pipelines.segment.outputs import OutputSpec, scores_path, vectors_path
    root = f"{output_dir}/stac"
    spec = OutputSpec(output_dir, tuple(class_names), scores=scores)
    items = []
    for record in records:
        if not record["mask"].endswith(".tif"):
            continue
        rel = posixpath.splitext(record["file_name"])[0]
        href = f"{root}/items/{rel}.json"
        item = raster_item(record, scores_path(spec, rel, "geotiff") if scores else None, href, class_names,
                           model_version, vectors_path(spec, rel) if vectors else None)
        items.append((href, item))
    if not items:
        return 0
    boxes = [item.bbox for _, item in items]
    extent = pystac.Extent(pystac.SpatialExtent([[min(b[0] for b in boxes), min(b[1] for b in boxes),
                                                  max(b[2] for b in boxes), max(b[3] for b in boxes)]]),
                           pystac.TemporalExtent([[min(i.datetime for _, i in items), max(i.datetime for _, i in items)]]))
    # named by the model, not the folder: the same run into another folder writes the same files
    collection = pystac.Collection(id=f"segpipe-segmentation-{model_version or 'model'}",
                                   description=f"segpipe segment output ({model_version})", extent=extent,
                                   license="other", summaries=pystac.Summaries({"segpipe:classes": list(class_names)}))
    items.sort(key=lambda pair: pair[0])  # the same order on every run
    for href, item in items:
        collection.add_link(pystac.Link("item", relative(href, root), media_type=pystac.MediaType.GEOJSON))
        item.add_link(pystac.Link("collection", relative(f"{root}/collection.json", posixpath.dirname(href)),
                                  media_type=pystac.MediaType.JSON))
        item.collection_id = collection.id
        write_atomic(href, json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)).encode(),
                     "application/geo+json")
    write_atomic(f"{root}/collection.json",
                 json.dumps(collection.to_dict(include_self_link=False, transform_hrefs=False)).encode(),
                 "application/json")
    return len(items)
