"""Label Studio's pre-annotation format for pixel masks: ``BrushLabels`` results in its own RLE.

Label Studio imports pixel masks only as brush regions (its COCO import takes boxes, polygons
and keypoints, not COCO RLE). A brush region's ``value.rle`` is a list of bytes holding a bit
stream (most significant bit first):

* a header: the number of values (32 bits), the word size minus 1 (5 bits) and four run-length
  field sizes minus 1 (4 bits each);
* then blocks: 1 bit "repeat", 2 bits choosing one of the four field sizes, that many bits
  holding the block length minus 1; a repeat block holds one word for the whole block, a literal
  block one word per value.

The values are the mask as an RGBA image, row by row, with every channel 255 inside the region
and 0 outside (what Label Studio's own ``mask2rle`` produces and its ``decode_rle`` reads; the
tests decode with ``label-studio-sdk``). Only repeat blocks are written: a class mask is long runs.
"""
from __future__ import annotations

import html

import numpy as np

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)  # Label Studio's defaults: block lengths up to 8, 16, 256 and 65536


def encode_brush_rle(region: np.ndarray) -> list:
    """A boolean [H, W] region -> Label Studio's brush RLE (a list of byte values)."""
    region = np.asarray(region, bool)
    values = np.repeat(region.reshape(-1).astype(np.uint8) * 255, 4)  # RGBA, every channel the same
    n = values.size
    bits = [f"{n:032b}", f"{WORD_SIZE - 1:05b}", "".join(f"{size - 1:04b}" for size in RLE_SIZES)]
    if n:
        change = np.flatnonzero(np.diff(values)) + 1
        starts = np.concatenate(([0], change))
        lengths = np.diff(np.concatenate((starts, [n])))
        longest = 1 << RLE_SIZES[-1]
        for start, length in zip(starts.tolist(), lengths.tolist()):
            word = f"{int(values[start]):0{WORD_SIZE}b}"
            while length:
                block = min(length, longest)
                size_index = next(k for k, size in enumerate(RLE_SIZES) if block - 1 < (1 << size))
                bits.append(f"1{size_index:02b}{block - 1:0{RLE_SIZES[size_index]}b}{word}")
                length -= block
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode(), np.uint8) - ord("0")).tolist()


def brush_results(mask: np.ndarray, class_names, skip=(0,), from_name: str = "tag", to_name: str = "image") -> list:
    """One BrushLabels result per class present in a class-index mask (background and 255 skipped)."""
    height, width = mask.shape
    results = []
    for index in np.unique(mask).tolist():
        if index in skip or index >= len(class_names):
            continue
        results.append({
            "id": f"{class_names[index]}-{index}", "from_name": from_name, "to_name": to_name, "type": "brushlabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_brush_rle(mask == index), "brushlabels": [class_names[index]]},
        })
    return results


def task(image_url: str, mask: np.ndarray, class_names, score: float, model_version: str, meta=None) -> dict:
    """A Label Studio task with the model's masks as a prediction (pre-annotation)."""
    return {"data": {"image": image_url, **(meta or {})},
            "predictions": [{"model_version": model_version, "score": float(score),
                             "result": brush_results(mask, class_names)}]}


def labeling_config(class_names, colors, skip=(0,)) -> str:
    """The labeling interface these tasks go with: an image and one brush label per class."""
    labels = "\n".join(f'    <Label value="{html.escape(name, quote=True)}" background="#{r:02x}{g:02x}{b:02x}"/>'
                       for index, (name, (r, g, b)) in enumerate(zip(class_names, colors)) if index not in skip)
    return ('<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="tag" toName="image">\n{labels}\n  </BrushLabels>\n</View>\n')
