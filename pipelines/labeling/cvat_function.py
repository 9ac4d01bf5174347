"""A CVAT auto-annotation function: segpipe's model pre-labels a CVAT task with masks (or polygons).

    cvat-cli --server-host https://cvat.example.com --auth USER task auto-annotate TASK_ID \\
        --function-module pipelines.labeling.cvat_function -p model=str:/path/to/MODEL \\
        [-p tile_size=int:512] [-p min_area=int:16] [-p tta_scales=str:1,1.25 -p tta_flip=bool:true] \\
        [--conf-threshold 0.5] [--conv-mask-to-poly] [--allow-unmatched-labels] [--clear-existing]

cvat-sdk's interface (``cvat_sdk.auto_annotation``): ``create(**params)`` builds the function
from the ``-p`` parameters; its ``spec`` declares one mask label per class of the model (the
background, when the class table has one, is what no shape covers), which CVAT matches to the
task's labels by name; ``detect(context, image)`` segments the image with the same tiling,
preprocessing and model as ``segpipe segment`` and returns one shape per connected region
(8-connected) of each class:

* a ``mask`` shape, encoded with cvat-sdk's own ``encode_mask``; or, when CVAT asks for polygons
  (``--conv-mask-to-poly``), a ``polygon`` of the region's outline (a polygon has no holes in
  CVAT: a region's holes are part of it as a polygon);
* a region whose mean confidence (the top class's probability, averaged over its pixels) is under
  ``--conf-threshold`` is left out, as are regions under ``min_area`` pixels.

Regions come from rasterio's ``features.shapes`` (GDAL's polygonize), rasterized back inside each
region's box for its mask (``pipelines.segment.vectors``, as ``segpipe segment --vectors``).
"""
from __future__ import annotations

import numpy as np

from segcli.segment import SegmentConfig, default_overlap
from pipelines.segment.vectors import connected_regions, region_pixels
from segformat.masks import background_index

# Tiling as segpipe segment's (its reasons there).
TILE_SIZE = SegmentConfig.__dataclass_fields__["tile_size"].default
BATCH_SIZE = SegmentConfig.__dataclass_fields__["batch_size"].default
# Specks of a few pixels are what a person deletes by hand after an FCN (its output is upsampled
# from a stride of 8): regions under 16 pixels (4x4) are not offered.
MIN_AREA = 16


class SegmentationFunction:
    """The detection function (cvat_sdk.auto_annotation.DetectionFunction) over a segpipe model."""

    def __init__(self, model: str, tile_size: int = TILE_SIZE, batch_size: int = BATCH_SIZE, min_area: int = MIN_AREA,
                 tta_scales: str = "1", tta_flip: bool = False):
        import cvat_sdk.auto_annotation as cvataa
        from apache_beam.io.filesystems import FileSystems

        from pipelines.segment.inference import model_identity
        from segcli.tta import as_scales
        from segmodel.predict import segmenter_for
        if min_area < 1 or tile_size < 32:
            raise ValueError(f"min_area must be at least 1 and tile_size at least 32, got {min_area}, {tile_size}")
        scales = as_scales(tta_scales)
        self.class_names, self.model_version = model_identity(model)
        self.min_area = min_area
        background = background_index(self.class_names)
        self.skip = () if background is None else (background,)
        self.spec = cvataa.DetectionFunctionSpec(labels=[
            cvataa.label_spec(name, index, type="mask") for index, name in enumerate(self.class_names)
            if index not in self.skip])
        self._segmenter = segmenter_for(model, len(self.class_names), tile_size, default_overlap(tile_size), batch_size,
                                        opener=FileSystems.open, tta_scales=scales, tta_flip=tta_flip,
                                        confidence_map=True)

    def segment(self, image) -> tuple:
        """(uint8 class mask, uint8 confidence x 255) of a PIL image."""
        from pipelines.segment.chunks import PhotoJob
        ((mask, stats, error),) = self._segmenter.segment([PhotoJob(np.asarray(image.convert("RGB")))])
        if error is not None:
            raise error
        return mask, stats["confidence_map"]

    def detect(self, context, image) -> list:
        import cvat_sdk.auto_annotation as cvataa
        from cvat_sdk.masks import encode_mask
        mask, confidence = self.segment(image)
        threshold = context.conf_threshold
        shapes = []
        for index, geometry, box in connected_regions(mask, self.skip, connectivity=8):
            x0, y0, x1, y1 = box
            pixels = region_pixels(geometry, box)
            area = int(pixels.sum())
            if area < self.min_area:
                continue
            if threshold is not None and confidence[y0:y1, x0:x1][pixels].mean() / 255.0 < threshold:
                continue
            if context.conv_mask_to_poly:
                outline = geometry["coordinates"][0][:-1]  # the exterior ring, not closed again
                shapes.append(cvataa.polygon(index, [float(v) for point in outline for v in point]))
            else:
                bitmap = np.zeros(mask.shape, bool)
                bitmap[y0:y1, x0:x1] = pixels
                shapes.append(cvataa.mask(index, encode_mask(bitmap, [x0, y0, x1, y1])))
        return shapes


def create(model: str, tile_size: int = TILE_SIZE, batch_size: int = BATCH_SIZE, min_area: int = MIN_AREA,
           tta_scales: str = "1", tta_flip: bool = False) -> SegmentationFunction:
    """What cvat-cli calls with the ``-p`` parameters (``-p model=str:MODEL``; test-time views as
    ``segpipe segment --tta_scales/--tta_flip``: ``-p tta_scales=str:1,1.25 -p tta_flip=bool:true``)."""
    return SegmentationFunction(model, tile_size, batch_size, min_area, tta_scales, tta_flip)
