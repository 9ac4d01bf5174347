"""What the STAC outputs of every job share (pystac is imported by the functions that need it)."""
from __future__ import annotations

import datetime
import json
import posixpath

# Points per edge of a footprint, and of the bbox's densified transform: a straight edge in a
# projected CRS is a curve in longitude and latitude.
EDGE_POINTS = 21


def relative(path: str, start: str) -> str:
    """``path`` relative to the folder ``start`` (local or one bucket): STAC hrefs that move with the folder."""
    return posixpath.relpath(path, start) if "://" not in path else posixpath.relpath(
        path.split("://", 1)[1], start.split("://", 1)[1])


def acquired(source: str) -> tuple:
    """(when, how it is known) for a source raster: its TIFFTAG_DATETIME (the time the image was
    made, as GeoTIFF writers record it), else the file's last modification: a re-run gives the same."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import rasters
    try:
        with rasters.open_raster(source) as src:
            stamp = src.tags().get("TIFFTAG_DATETIME", "")
        return datetime.datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc), \
            "TIFFTAG_DATETIME"
    except (ValueError, OSError):
        pass
    (metadata,) = FileSystems.match([source])[0].metadata_list
    return datetime.datetime.fromtimestamp(int(metadata.last_updated_in_seconds), datetime.timezone.utc), \
        "file modified"



def set_projection(item, crs, transform, shape) -> None:
    """The projection extension on ``item``: the CRS as its EPSG code (else its WKT2; none without
    one), the affine transform's six numbers and the [height, width] shape."""
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.crs import CRS
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    if crs:
        crs = CRS.from_user_input(crs)
        epsg = crs.to_epsg()
        if epsg is not None:
            projection.code = f"EPSG:{epsg}"
        else:
            projection.wkt2 = crs.to_wkt()
    projection.transform = list(transform)[:6]
    projection.shape = list(shape)


def write_collection(root: str, collection_id: str, description: str, items: list, summaries=None) -> int:
    """[(href, Item)] (in the order to list them) and their Collection (spatial and temporal extent
    over the Items) written under ``root`` with relative links, atomically; returns the Items' count."""
    import pystac

    from pipelines.common.storage import write_atomic
    if not items:
        return 0
    boxes = [item.bbox for _, item in items]
    times = [item.datetime for _, item in items]
    extent = pystac.Extent(pystac.SpatialExtent([[min(b[0] for b in boxes), min(b[1] for b in boxes),
                                                  max(b[2] for b in boxes), max(b[3] for b in boxes)]]),
                           pystac.TemporalExtent([[min(times), max(times)]]))
    collection = pystac.Collection(id=collection_id, description=description, extent=extent, license="other",
                                   summaries=pystac.Summaries(summaries) if summaries else None)
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


def chips_catalog(features: list, output_dir: str) -> int:
    """``segpipe dataset raster``'s chips (chips.geojson's features) as a STAC Collection with an
    Item per chip: its WGS84 footprint and bbox, the projection extension (CRS, transform, shape),
    the split and scene window, the scene's datetime; the dataset's manifest as an asset."""
    import pystac
    from shapely.geometry import shape
    root = f"{output_dir}/stac"
    when = {}
    items = []
    for feature in sorted(features, key=lambda f: f["properties"]["chip"]):
        props = feature["properties"]
        if props["scene"] not in when:
            when[props["scene"]] = acquired(props["scene"])
        moment, how = when[props["scene"]]
        item_id = props["chip"].replace("/", "_")  # a chip is SCENE/rROW_cCOL: one file name per Item
        item = pystac.Item(id=item_id, geometry=feature["geometry"], bbox=list(shape(feature["geometry"]).bounds),
                           datetime=moment, properties={
                               "segpipe:chip": props["chip"], "segpipe:split": props["split"], "segpipe:scene": props["scene"],
                               "segpipe:window": [props["row"], props["col"], props["height"], props["width"]],
                               "segpipe:datetime_from": how})
        set_projection(item, props.get("crs"), props["transform"], [props["height"], props["width"]])
        href = f"{root}/items/{item_id}.json"
        item.add_asset("dataset", pystac.Asset(relative(f"{output_dir}/dataset.json", posixpath.dirname(href)),
                                               title="the dataset's manifest (the chip's shard)",
                                               media_type=pystac.MediaType.JSON, roles=["metadata"]))
        items.append((href, item))
    return write_collection(root, "segpipe-chips", "segpipe dataset raster chips", items)
