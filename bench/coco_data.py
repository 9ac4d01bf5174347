"""COCO-like benchmark data: N 640x480 JPEGs, ~7 polygon instances of 12-40 vertices each over
80 categories (COCO's ids), an uncompressed-RLE crowd region in every tenth image."""
from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image

COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


def _runs(mask: np.ndarray) -> list:
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def generate(out_dir: str, n: int, seed: int = 0, height: int = 480, width: int = 640) -> str:
    """Writes out_dir/images/*.jpg and out_dir/annotations.json once (cached); returns the JSON path."""
    path = os.path.join(out_dir, "annotations.json")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, annotations = [], []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        # Photo-like content: smooth colour fields plus fine noise (JPEGs of ~60-90 KB).
        base = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
        field = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
        pixels = np.clip(field + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        name = f"{k:012d}.jpg"
        Image.fromarray(pixels).save(os.path.join(out_dir, "images", name), quality=90)
        images.append({"id": k + 1, "file_name": name, "height": height, "width": width})
        for _ in range(int(rng.integers(5, 10))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius = rng.uniform(15, 140)
            vertices = int(rng.integers(12, 41))
            angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
            r = radius * rng.uniform(0.5, 1.0, vertices)
            xs = np.clip(cx + r * np.cos(angles), 0, width - 1)
            ys = np.clip(cy + r * np.sin(angles), 0, height - 1)
            polygon = np.stack([xs, ys], 1).ravel().round(2).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": int(rng.choice(COCO_IDS)),
                                "segmentation": [polygon], "iscrowd": 0, "area": float(math.pi * radius ** 2 / 2),
                                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
                                         float(ys.max() - ys.min())]})
        if k % 10 == 9:
            crowd = np.zeros((height, width), np.uint8)
            y0, x0 = int(rng.integers(0, height - 120)), int(rng.integers(0, width - 160))
            crowd[y0:y0 + 120, x0:x0 + 160] = 1
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 1,
                                "segmentation": {"size": [height, width], "counts": _runs(crowd)},
                                "area": float(crowd.sum()), "bbox": [float(x0), float(y0), 160.0, 120.0]})
    with open(path, "w") as handle:
        json.dump({"info": {}, "licenses": [], "images": images, "annotations": annotations,
                   "categories": [{"id": i, "name": f"class_{i}", "supercategory": "thing"} for i in COCO_IDS]},
                  handle)
    return path
