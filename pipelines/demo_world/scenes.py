"""Built-in demo data: a deterministic, procedural aerial-like world (vegetation, roads, buildings,
water), written as a real COCO instances dataset (JPEG images, polygons, compressed-RLE crowd
regions) and as a large georeferenced GeoTIFF mosaic. Needs no network and no ../shared.

The label of every pixel is decided first (with the same pycocotools rasterization and painting
rules the dataset pipeline uses), then the image is rendered from the labels with per-class
texture, noise and lighting, so the task is learnable but not trivial.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segformat import masks as mask_lib

CATEGORIES = [{"id": 1, "name": "road", "supercategory": "ground"},
              {"id": 2, "name": "building", "supercategory": "structure"},
              {"id": 3, "name": "water", "supercategory": "ground"}]
# Mean RGB of each class (index 0 = vegetation background). Building roofs vary per building.
PALETTE = np.array([[72, 112, 52], [128, 128, 124], [176, 96, 74], [44, 76, 140]], np.float32)


def _blob(rng, cx, cy, radius, vertices):
    angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    radii = radius * rng.uniform(0.6, 1.0, vertices)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().tolist()


def _rectangle(cx, cy, length, width, angle):
    c, s = math.cos(angle), math.sin(angle)
    corners = [(-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2), (-length / 2, width / 2)]
    return [v for x, y in corners for v in (cx + x * c - y * s, cy + x * s + y * c)]


def scene_annotations(rng: np.random.Generator, height: int, width: int, crowd: bool = False) -> list:
    """Random instances as COCO annotation dicts (without ids): water blobs, roads, buildings."""
    anns = []
    scale = min(height, width)
    for _ in range(rng.integers(0, 3)):
        anns.append({"category_id": 3, "iscrowd": 0, "segmentation": [_blob(
            rng, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.12, 0.3) * scale, int(rng.integers(12, 21)))]})
    for _ in range(rng.integers(1, 3)):
        angle = rng.uniform(0, math.pi)
        anns.append({"category_id": 1, "iscrowd": 0, "segmentation": [_rectangle(
            rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, 2 * scale, rng.uniform(0.05, 0.09) * scale,
            angle)]})
    for _ in range(rng.integers(3, 9)):
        anns.append({"category_id": 2, "iscrowd": 0, "segmentation": [_rectangle(
            rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.08, 0.2) * scale,
            rng.uniform(0.08, 0.2) * scale, rng.uniform(0, math.pi))]})
    if crowd:  # a dense block of buildings labelled as one crowd region (compressed RLE)
        region = np.zeros((height, width), np.uint8, order="F")
        y0, x0 = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        region[y0:y0 + height // 4, x0:x0 + width // 4] = 1
        rle = mask_utils.encode(region)
        anns.append({"category_id": 2, "iscrowd": 1,
                     "segmentation": {"size": [height, width], "counts": rle["counts"].decode()}})
    return anns


def render(rng: np.random.Generator, labels: np.ndarray, crowd_pixels: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 image for a class-id map (255 = crowd, rendered as buildings)."""
    h, w = labels.shape
    classes = np.where(labels == mask_lib.IGNORE_INDEX, 2, labels).astype(np.int64)
    image = PALETTE[classes].copy()
    image[classes == 2] *= rng.uniform(0.8, 1.2)  # roofs differ between scenes
    # Texture: coarse per-class patches plus per-pixel noise, and a smooth lighting gradient.
    coarse = rng.normal(0, 10, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    image += coarse * (classes[..., None] != 1) + rng.normal(0, 8, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1 + 0.15 * np.sin(xx / max(w, 1) * rng.uniform(1, 3) + yy / max(h, 1) * rng.uniform(1, 3))
    return np.clip(image * light[..., None], 0, 255).astype(np.uint8)


def scene(rng, height, width, crowd=False):
    """(image, annotations, labels) for one scene; labels follow the pipeline's default rules."""
    anns = scene_annotations(rng, height, width, crowd)
    instances = [mask_lib.Instance(k, a["category_id"], mask_lib.annotation_rle(a["segmentation"], height, width),
                                   bool(a["iscrowd"])) for k, a in enumerate(anns)]
    labels = mask_lib.paint_class_mask(height, width, instances)
    return render(rng, labels), anns, labels


def write_coco_dataset(out_dir: str, num_images: int, size=(192, 256), seed: int = 0, crowd_every: int = 10,
                       first_id: int = 1) -> str:
    """Writes ``out_dir/images/*.jpg`` and ``out_dir/annotations.json``; returns the JSON path."""
    os.makedirs(f"{out_dir}/images", exist_ok=True)
    images, annotations = [], []
    for k in range(num_images):
        image_id = first_id + k
        rng = np.random.default_rng([seed, image_id])
        h, w = size
        image, anns, _ = scene(rng, h, w, crowd=crowd_every > 0 and k % crowd_every == crowd_every - 1)
        name = f"scene_{image_id:05d}.jpg"
        Image.fromarray(image).save(f"{out_dir}/images/{name}", quality=92)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for ann in anns:
            ann = dict(ann, id=len(annotations) + 1, image_id=image_id)
            seg = ann["segmentation"]
            rle = (mask_lib.annotation_rle(seg, h, w))
            ann["area"] = float(mask_utils.area(rle))
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append(ann)
    path = f"{out_dir}/annotations.json"
    with open(path, "w") as handle:
        json.dump({"info": {"description": "segpipe demo world", "seed": seed}, "licenses": [],
                   "categories": CATEGORIES, "images": images, "annotations": annotations}, handle)
    return path


def write_geotiff_mosaic(path: str, size: int = 4096, block: int = 512, seed: int = 0,
                         labels_path: str | None = None, width: int | None = None) -> str:
    """A tiled, georeferenced (EPSG:3857, 1 m pixels) RGB GeoTIFF of the same world, ``size``
    pixels high and ``width`` (default ``size``) wide, written block by block so memory stays at
    one block; optionally its ground-truth labels beside it."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    height, width = size, width or size
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:3857",
                   transform=from_origin(1_000_000.0, 6_000_000.0, 1.0, 1.0), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", photometric="RGB")
    truth = None
    with rasterio.open(path, "w", **profile) as dst:
        if labels_path:
            truth = rasterio.open(labels_path, "w", **dict(profile, count=1, photometric="MINISBLACK"))
        try:
            for row in range(0, height, block):
                for col in range(0, width, block):
                    rng = np.random.default_rng([seed, 7, row, col])
                    h, w = min(block, height - row), min(block, width - col)
                    image, _, labels = scene(rng, h, w)
                    window = Window(col, row, w, h)
                    dst.write(image.transpose(2, 0, 1), window=window)
                    if truth is not None:
                        truth.write(labels[None], window=window)
        finally:
            if truth is not None:
                truth.close()
    return path
