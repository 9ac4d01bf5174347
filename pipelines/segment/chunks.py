"""The unit of batch segmentation: a *chunk*, a rectangle of one input's output.

A photo is one chunk. A GeoTIFF is a grid of chunks of at most ``chunk_size`` pixels a side
(borders where a tile ends, see ``segmodel.tiling``), so rasters of any height and width spread
over workers and each worker's memory is bounded by the chunk, not the raster. What travels
between stages is this small description (a path, a window, the raster's header facts); a
chunk's pixels are read right before inference, in the same stage (``ChunkJob``), and never go
through a shuffle.
"""
from __future__ import annotations

import dataclasses

from apache_beam.io.filesystems import FileSystems

from pipelines.common import images as image_checks
from pipelines.common import rasters
from segmodel import predict, tiling

# What a photo counts for when RunInference groups chunks into batches by their tiles: its size
# is not known until it is decoded (a 1024x768 photo is 6 tiles of 512 with 64 overlap).
PHOTO_TILES_GUESS = 4


@dataclasses.dataclass(frozen=True)
class Chunk:
    source: str  # the input's path or URI
    rel: str  # its path under the input glob's root, without extension
    kind: str  # "image" (JPEG/PNG) or "geotiff"
    info: rasters.ImageInfo | None = None  # a raster's header facts (None for a photo: not read yet)
    core: tuple | None = None  # (r0, r1, c0, c1) of the output this chunk writes; None: the whole image
    grid: tuple = (0, 0)  # (chunk row, chunk column)
    count: int = 1  # chunks of this input
    tiles: int = PHOTO_TILES_GUESS  # model tiles this chunk runs

    @property
    def whole(self) -> bool:
        return self.count == 1


def plan_chunks(source: str, rel: str, tile: int, overlap: int, chunk_size: int, bands=None) -> list:
    """The chunks of one input: one for a photo (nothing read); for a GeoTIFF, its header is read
    (and, for non-8-bit data, a decimated read for the stretch) and the output cut into a grid."""
    if not rasters.is_geotiff(source):
        return [Chunk(source, rel, "image")]
    info = rasters.open_geotiff(source, rel, bands)
    rows = tiling.chunk_bounds(info.height, tile, overlap, chunk_size)
    cols = tiling.chunk_bounds(info.width, tile, overlap, chunk_size)
    return [Chunk(source, rel, "geotiff", info, (r0, r1, c0, c1), (i, j), len(rows) * len(cols),
                  predict.expected_tiles(info.height, info.width, tile, overlap, (r0, r1, c0, c1)))
            for i, (r0, r1) in enumerate(rows) for j, (c0, c1) in enumerate(cols)]


class PhotoJob:
    """A decoded photo as one ``TiledSegmenter`` job (an image that is already in memory: a
    labeling tool's request)."""
    core = None

    def __init__(self, image):
        self.image = image

    def open(self):
        return self.image.shape[:2]

    def read(self, row: int, col: int, height: int, width: int):
        return self.image[row:row + height, col:col + width], None

    def close(self):
        self.image = None


class ChunkJob:
    """A chunk's pixels for ``segmodel.predict.TiledSegmenter``: ``open`` reads a photo whole
    (JPEG/PNG cannot be read by window) or opens a raster; ``read`` returns a window as uint8 RGB
    and its valid-pixel mask (None when every pixel is valid).

    A raster is opened, read and closed on one thread of its own: rasterio keeps the file
    objects of a dataset opened through an opener (``gs://``) in a context variable of the
    thread that opened it, and a GDAL dataset is not safe to use from two threads at once."""

    def __init__(self, chunk: Chunk, max_pixels: int = image_checks.DEFAULT_MAX_PIXELS):
        self.chunk, self.max_pixels = chunk, max_pixels
        self.core = chunk.core
        self.image = None
        self._raster = self._io = None

    def open(self):
        if self.chunk.kind == "image":
            with FileSystems.open(self.chunk.source) as handle:
                data = handle.read()
            self.image = rasters.decode_image(data, self.max_pixels)
            return self.image.shape[:2]
        import concurrent.futures
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raster-io")
        self._raster = self._io.submit(rasters.open_raster, self.chunk.source).result()
        return self.chunk.info.height, self.chunk.info.width

    def read(self, row: int, col: int, height: int, width: int):
        if self.image is not None:
            return self.image[row:row + height, col:col + width], None
        pixels, valid = self._io.submit(rasters.read_window, self._raster, self.chunk.info, row, col, height,
                                        width).result()
        return pixels, (None if valid.all() else valid)

    def close(self):
        self.image = None
        if self._io is not None:
            if self._raster is not None:
                self._io.submit(self._raster.close).result()
            self._io.shutdown()
        self._raster = self._io = None
