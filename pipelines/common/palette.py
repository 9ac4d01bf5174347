"""Class colours and overlays: one palette for the GeoTIFF colour tables, the overlay JPEGs that
batch segmentation writes and every picture in the report."""
from __future__ import annotations

import numpy as np

from segformat.masks import IGNORE_INDEX

# Background black, then saturated colours that stay apart from each other and from what they
# cover: no greys or browns, which vanish on roads, concrete, roofs and bare soil (a labeller
# must see a pre-label on a grey road). Class 1 is magenta, KITTI road's own colour. Classes past
# the list get a colour drawn from a generator seeded by their index (the same on every run).
BASE_COLORS = [(0, 0, 0), (255, 0, 255), (220, 60, 40), (40, 90, 220), (60, 180, 75), (255, 225, 25),
               (145, 30, 180), (70, 240, 240), (255, 140, 0), (0, 255, 127), (250, 120, 180), (0, 160, 160)]
IGNORE_COLOR = (255, 255, 255)
# The share of the class colour in an overlay pixel: the photo stays readable under the labels.
OVERLAY_ALPHA = 0.5


def class_color(index: int) -> tuple:
    """The RGB colour of class ``index`` (white for the ignore index)."""
    if index == IGNORE_INDEX:
        return IGNORE_COLOR
    if index < len(BASE_COLORS):
        return BASE_COLORS[index]
    rng = np.random.default_rng(index)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def palette() -> np.ndarray:
    """uint8 [256, 3]: the colour of every possible mask value."""
    return np.array([class_color(i) for i in range(256)], np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    return palette()[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image with each labelled pixel (not background, not ignore) tinted by its class colour."""
    painted = (mask > 0) & (mask != IGNORE_INDEX)
    out = image.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * palette()[mask[painted]].astype(np.float32)
    return out.astype(np.uint8)


def geotiff_colormap(num_classes: int) -> dict:
    """A GeoTIFF colour table: a colour per class, the ignore/nodata value transparent."""
    table = {i: class_color(i) + (255,) for i in range(num_classes)}
    table[IGNORE_INDEX] = (0, 0, 0, 0)
    return table
