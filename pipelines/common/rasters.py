"""Reading input images window by window (JPEG/PNG via Pillow, GeoTIFF via rasterio) and writing
masks (PNG, or a tiled, compressed, Cloud-Optimized GeoTIFF keeping the input's CRS/transform)."""
from __future__ import annotations

import dataclasses
import io
import os
import tempfile

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.common import images as image_checks
from segformat.masks import IGNORE_INDEX

GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    source: str  # the input path or URI
    rel: str  # path relative to the input glob's root, without extension
    kind: str  # "image" (JPEG/PNG) or "geotiff"
    height: int
    width: int
    crs: str | None = None
    transform: tuple | None = None
    bands: tuple = (1, 2, 3)
    scale: tuple | None = None  # per-band (low, high) for non-uint8 rasters
    nodata: float | None = None


def is_geotiff(path: str) -> bool:
    return path.lower().endswith(GEOTIFF_SUFFIXES)


def choose_bands(count: int, bands: str | None) -> tuple:
    """``--bands`` '4,3,2' (1-based) or the default: the first three, or band 1 three times."""
    if bands:
        chosen = tuple(int(b) for b in bands.split(","))
        if len(chosen) == 1:
            chosen = chosen * 3
        if len(chosen) != 3 or not all(1 <= b <= count for b in chosen):
            raise image_checks.ImageError("bad_bands", f"--bands {bands} does not name 3 of {count} bands")
        return chosen
    return (1, 2, 3) if count >= 3 else (1, 1, 1)


# GDAL's block cache defaults to 5% of RAM and fills with every block read or written, so a
# worker's memory would grow with the raster; 128 MB holds several tile rows of any chunk.
GDAL_CACHE_MB = 128


def limit_gdal_cache() -> None:
    """Caps GDAL's block cache (a process-wide setting) before a raster is read or written."""
    from rasterio.env import set_gdal_config
    set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB)


def _beam_opener(path, mode="rb"):
    return FileSystems.open(path)


def open_raster(path: str):
    """rasterio dataset for a local path or any Beam filesystem URI (gs://...): remote files are
    read through Beam's seekable file objects, so a window read fetches only the bytes it needs."""
    import rasterio
    limit_gdal_cache()
    if "://" in path:
        # EMPTY_DIR: GDAL does not list the "folder" or probe for side-car files (.msk, .aux.xml,
        # .ovr) of a remote raster: each probe would be a failed object request.
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            return rasterio.open(path, opener=_beam_opener)
    return rasterio.open(path)


def open_geotiff(path: str, rel: str, bands: str | None) -> ImageInfo:
    from rasterio.enums import Resampling
    try:
        src = open_raster(path)
    except Exception as e:  # rasterio raises RasterioIOError and friends
        raise image_checks.ImageError("unreadable_image", str(e)[:300]) from None
    with src:
        chosen = choose_bands(src.count, bands)
        scale = None
        if src.dtypes[0] != "uint8":
            # Non-8-bit rasters (16-bit, float reflectance) are stretched per band between the
            # 2nd and 98th percentile of a decimated read: robust to outliers and to nodata.
            small = (max(1, src.height // 16), max(1, src.width // 16))
            scale = []
            for band in chosen:
                data = src.read(band, out_shape=small, resampling=Resampling.nearest, masked=True)
                values = data.compressed() if np.ma.isMaskedArray(data) else data.ravel()
                values = values[np.isfinite(values)]
                low, high = (np.percentile(values, [2, 98]) if values.size else (0.0, 1.0))
                scale.append((float(low), float(high) if high > low else float(low) + 1.0))
            scale = tuple(scale)
        return ImageInfo(path, rel, "geotiff", src.height, src.width, src.crs.to_string() if src.crs else None,
                         tuple(src.transform)[:6], chosen, scale, src.nodata)


def read_window(src, info: ImageInfo, row: int, col: int, height: int, width: int):
    """uint8 RGB [h, w, 3] and a valid-pixel mask [h, w] (False where the raster is nodata)
    from an open rasterio dataset."""
    from rasterio.windows import Window
    window = Window(col, row, width, height)
    data = src.read(list(info.bands), window=window).transpose(1, 2, 0)
    # GDAL's dataset mask: a pixel is nodata only where every band says so (a dark pixel in
    # one band of a real scene is still data).
    valid = src.dataset_mask(window=window) > 0
    if info.scale is not None:
        low = np.array([s[0] for s in info.scale], np.float32)
        high = np.array([s[1] for s in info.scale], np.float32)
        data = np.clip((data.astype(np.float32) - low) / (high - low) * 255.0, 0, 255)
        valid &= np.all(np.isfinite(data), axis=-1)
        data = np.nan_to_num(data)
    return data.astype(np.uint8), valid


# The block size of every mask GeoTIFF written (parts, plain and COG): GDAL's COG default, and
# the row height the merge of a raster's parts writes at once (segment.outputs.MERGE_ROWS).
MASK_BLOCK = 256


def write_png(path: str, mask: np.ndarray) -> None:
    from pipelines.common.storage import write_atomic
    write_atomic(path, image_checks.encode_mask_png(mask), "image/png")


# How the GeoTIFFs nobody keeps are compressed: the plain file a COG is converted from and a
# chunk's part files. ZSTD at level 1 writes about as fast as no compression (deflate made
# writing the plain file a quarter of a 16384^2 mask's COG time) and still compresses what lies
# on local disk and, for the parts, in the output's storage.
SCRATCH_COMPRESSION = dict(compress="zstd", zstd_level=1)

# How a COG's overviews are computed, per kind of band. A class mask's are the nearest pixel's
# class: an average of class ids is another class. Scores and probabilities are averaged (the
# mean confidence of the area an overview pixel covers; nodata and masked pixels left out).
# Named, never left to GDAL's COG default: that is nearest only for a band with a colour table
# and cubic otherwise, which overshoots 0-255 scores and is the slowest of the three.
OVERVIEWS_CLASSES = "nearest"
OVERVIEWS_SCORES = "average"


def mask_profile(info: ImageInfo) -> dict:
    from rasterio.transform import Affine
    return dict(driver="GTiff", height=info.height, width=info.width, count=1, dtype="uint8",
                crs=info.crs, transform=Affine(*info.transform) if info.transform else None, nodata=IGNORE_INDEX,
                tiled=True, blockxsize=MASK_BLOCK, blockysize=MASK_BLOCK, **SCRATCH_COMPRESSION)


def to_cog(plain: str, cog: str, overviews: str) -> None:
    """The plain tiled GeoTIFF ``plain`` as a deflated Cloud-Optimized GeoTIFF ``cog``, its
    overviews resampled with ``overviews`` (GDAL's name: "nearest", "average", ...)."""
    from rasterio.shutil import copy as rio_copy
    # No fallback to the plain GeoTIFF: a user asked for a COG, and a GDAL without the COG driver
    # (GDAL < 3.1) is an installation to fix, reported as this input's error record.
    rio_copy(plain, cog, driver="COG", compress="deflate", blocksize=MASK_BLOCK, resampling=overviews)


def publish_cog(plain: str, path: str, overviews: str) -> str:
    """The plain GeoTIFF ``plain`` as a COG beside it (``to_cog``), moved to ``path`` atomically;
    returns the local COG's path (the caller deletes the folder)."""
    from pipelines.common.storage import upload_atomic
    cog = os.path.join(os.path.dirname(plain), "cog.tif")
    to_cog(plain, cog, overviews)
    upload_atomic(cog, path, "image/tiff")
    return cog


def write_plain_tiff(local: str, mask: np.ndarray) -> None:
    """A uint8 mask [h, w] (or bands [h, w, C]) as a tiled, lightly compressed GeoTIFF without
    georeferencing (a chunk's part file)."""
    import rasterio
    import warnings
    from rasterio.errors import NotGeoreferencedWarning
    bands = mask[None] if mask.ndim == 2 else mask.transpose(2, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(local, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=len(bands),
                           dtype="uint8", tiled=True, blockxsize=MASK_BLOCK, blockysize=MASK_BLOCK,
                           **SCRATCH_COMPRESSION) as dst:
            dst.write(bands)


def open_part(path: str):
    """A chunk's part file (written by write_plain_tiff, so it has no georeferencing by design)."""
    import warnings
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_raster(path)


def write_geotiff_mask(path: str, info: ImageInfo, windows, colormap: dict | None, nodata: int = IGNORE_INDEX,
                       overviews: str = OVERVIEWS_CLASSES) -> str:
    """Writes mask windows [(row, col, uint8 array)] one at a time into a tiled GeoTIFF with the
    input's CRS and transform, converts it to a Cloud-Optimized GeoTIFF (overviews resampled with
    ``overviews``) and moves it to ``path`` atomically. Returns the local COG's path for further
    reading (the caller deletes its folder)."""
    import rasterio
    from rasterio.windows import Window
    limit_gdal_cache()
    workdir = tempfile.mkdtemp(prefix="segpipe-mask-")
    plain = os.path.join(workdir, "plain.tif")
    with rasterio.open(plain, "w", **dict(mask_profile(info), nodata=nodata)) as dst:
        for row, col, data in windows:
            dst.write(data[None], window=Window(col, row, data.shape[1], data.shape[0]))
        if colormap is not None:
            dst.write_colormap(1, colormap)
    return publish_cog(plain, path, overviews)


def write_geotiff_bands(path: str, info: ImageInfo, windows, band_names) -> str:
    """Writes windows [(row, col, uint8 [h, w, C], valid [h, w] bool)] into a C-band tiled
    GeoTIFF with the input's CRS and transform (none for a photo), each band described by its name
    in ``band_names`` and the invalid pixels in an internal mask (GDAL's per-dataset mask: every
    value 0-255 of a band is data, so no nodata value can say it), converts it to a
    Cloud-Optimized GeoTIFF (averaged overviews) and moves it to ``path`` atomically. Returns the local COG's path (the
    caller deletes its folder)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window
    limit_gdal_cache()
    workdir = tempfile.mkdtemp(prefix="segpipe-bands-")
    plain = os.path.join(workdir, "plain.tif")
    profile = dict(mask_profile(info), count=len(band_names), nodata=None, interleave="pixel")
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a photo's has no georeferencing
        with rasterio.open(plain, "w", **profile) as dst:
            for k, name in enumerate(band_names, start=1):
                dst.set_band_description(k, name)
            for row, col, data, valid in windows:
                window = Window(col, row, data.shape[1], data.shape[0])
                dst.write(data.transpose(2, 0, 1), window=window)
                dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
        return publish_cog(plain, path, OVERVIEWS_SCORES)  # in the Env: the copy keeps the internal mask


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    fmt, _, _ = image_checks.inspect_image(data, max_pixels)
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
