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
import posixpath
import urllib.parse

import numpy as np

from segformat.masks import IGNORE_INDEX, AnnotationError, annotation_rle, background_index

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)  # Label Studio's defaults: block lengths up to 8, 16, 256 and 65536
# How Label Studio serves a file of its local-files storage (LOCAL_FILES_SERVING_ENABLED, the
# path relative to LOCAL_FILES_DOCUMENT_ROOT follows ?d=).
LOCAL_FILES_URL = "/data/local-files/?d="


def image_url(path: str, prefix: str = "") -> str:
    """What Label Studio loads the image from: prefix + file name, a gs:// URI as its Google Cloud
    Storage source serves it, or a local file through its local-files storage."""
    if prefix:
        return prefix + posixpath.basename(path)
    if "://" in path:
        return path
    return LOCAL_FILES_URL + path.lstrip("/")


def image_file_name(url: str) -> str:
    """A task's image URL (a local-files URL, gs://, http(s)://) -> the image's file name."""
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else parsed.path
    return posixpath.basename(urllib.parse.unquote(path))


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


def category_indices(class_names) -> dict:
    """COCO category id -> mask index for the document export_to_coco writes: 1..N -> 1..N after a
    background; without one, k + 1 -> k for every class and one more id, the "unlabeled" region
    covering each image as a crowd, -> 255 (pixels no person painted are not taught as any class)."""
    if background_index(class_names) is not None:
        return {k: k for k in range(1, len(class_names))}
    return {**{k + 1: k for k in range(len(class_names))}, len(class_names) + 1: IGNORE_INDEX}


def brush_results(mask: np.ndarray, class_names, skip=None, from_name: str = "tag", to_name: str = "image") -> list:
    """One BrushLabels result per class present in a class-index mask (the background, if the table
    has one, and 255 skipped)."""
    if skip is None:
        skip = (0,) if background_index(class_names) is not None else ()
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


def labeling_config(class_names, colors, skip=None) -> str:
    """The labeling interface these tasks go with: an image and one brush label per class (the
    background, if the table has one, is what no brush covers)."""
    if skip is None:
        skip = (0,) if background_index(class_names) is not None else ()
    labels = "\n".join(f'    <Label value="{html.escape(name, quote=True)}" background="#{r:02x}{g:02x}{b:02x}"/>'
                       for index, (name, (r, g, b)) in enumerate(zip(class_names, colors)) if index not in skip)
    return ('<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="tag" toName="image">\n{labels}\n  </BrushLabels>\n</View>\n')


def decode_brush_rle(rle, height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE (repeat and literal blocks, any word and field sizes) -> a
    boolean [height, width] region: the pixels whose alpha value is non-zero."""
    bits = np.unpackbits(np.asarray(rle, np.uint8))
    position = 0

    def read(count: int) -> int:
        nonlocal position
        value = 0
        for bit in bits[position:position + count]:
            value = (value << 1) | int(bit)
        if position + count > bits.size:
            raise ValueError("brush RLE ends inside a block")
        position += count
        return value
    total, word_size = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if total != height * width * 4:
        raise ValueError(f"brush RLE holds {total} values, not {height}x{width}x4")
    values = np.zeros(total, np.uint8)
    i = 0
    while i < total:
        repeat = read(1)
        end = min(total, i + 1 + read(sizes[read(2)]))
        if repeat:
            values[i:end] = read(word_size)
        else:
            for k in range(i, end):
                values[k] = read(word_size)
        i = end
    return values.reshape(height, width, 4)[..., 3] > 0


def chosen_annotation(item: dict):
    """The annotation of an exported task to train on: the latest one not cancelled (skipped), or
    None when people skipped the task or never annotated it."""
    done = [a for a in item.get("annotations", []) if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id", 0)))


def later_on_top(regions: list, height: int, width: int) -> list:
    """[(category, segmentation)] in the annotation's order -> the same regions with each one's
    pixels that a later region also covers taken out (empty ones dropped), as compressed RLEs.

    In a correction the person's latest region is the intent: Label Studio lists an annotation's
    regions in the order they were made (the pre-labels first, then what the person added), so a
    region added over another one wins there, whatever the two regions' sizes. After this no two
    regions overlap, so the COCO job's own overlap rule (smaller on top) has nothing to decide.
    AnnotationError for a polygon that is not one (segformat.masks' checks)."""
    from pycocotools import mask as mask_utils
    covered = np.zeros((height, width), bool)
    flattened = []
    for category, segmentation in reversed(regions):
        region = mask_utils.decode(annotation_rle(segmentation, height, width)).astype(bool)
        visible = region & ~covered
        covered |= region
        if visible.any():
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            flattened.append((category, {"size": rle["size"], "counts": rle["counts"].decode()}))
    return flattened[::-1]


def export_to_coco(items: list, class_names, image_name) -> tuple:
    """A Label Studio JSON export -> (a COCO instances document, [(task id, reason)] not used).

    Brush regions and polygons (points in percent of the image) become compressed-RLE
    segmentations, overlaps resolved by ``later_on_top``; ``class_names`` (a model's classes.json order) numbers the categories as
    ``category_indices`` maps them back: with a background first, 1..N; without one, every class,
    and each image gets one crowd region of category "unlabeled" over the whole frame, so that the
    pixels no region covers become 255 under the COCO job's default ``--crowd ignore``.
    ``image_name(url)`` gives a task image's file name under the images folder. Tasks skipped or
    never annotated are listed, not turned into all-background masks."""
    from pycocotools import mask as mask_utils
    ids = {index: category for category, index in category_indices(class_names).items()}
    categories = [{"id": ids[k], "name": name} for k, name in enumerate(class_names) if k in ids]
    void = None
    if background_index(class_names) is None:
        void = len(class_names) + 1
        categories.append({"id": void, "name": "unlabeled"})
    index = {name: ids[k] for k, name in enumerate(class_names) if k in ids}
    images, annotations, unused, seen = [], [], [], set()
    for item in items:
        annotation = chosen_annotation(item)
        if annotation is None:
            unused.append((item.get("id"), "skipped" if item.get("annotations") else "not_annotated"))
            continue
        results = [r for r in annotation.get("result", []) if r.get("type") in ("brushlabels", "polygonlabels")]
        sizes = {(r.get("original_height"), r.get("original_width")) for r in results}
        if len(sizes) > 1 or (sizes and None in next(iter(sizes))):
            unused.append((item.get("id"), "inconsistent_image_size"))
            continue
        height, width = next(iter(sizes)) if sizes else (item.get("data", {}).get("height"),
                                                         item.get("data", {}).get("width"))
        file_name = image_name(item["data"]["image"])
        if file_name in seen:  # the same image in two tasks: the first one counts
            unused.append((item.get("id"), "duplicate_image"))
            continue
        converted, problem = [], None
        for result in results:
            kind = result["type"]
            label = (result["value"].get(kind) or [None])[0]
            if label not in index:
                problem = f"unknown_label:{label}"
                break
            try:
                if kind == "brushlabels":
                    region = decode_brush_rle(result["value"]["rle"], height, width)
                    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
                    segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
                else:
                    points = np.asarray(result["value"]["points"], np.float64) * [width / 100.0, height / 100.0]
                    segmentation = [points.reshape(-1).tolist()]
            except (ValueError, TypeError, KeyError) as error:
                problem = f"malformed_{'rle' if kind == 'brushlabels' else 'polygon'}: {error}"[:200]
                break
            converted.append((index[label], segmentation))
        if problem is None:
            try:
                converted = later_on_top(converted, height, width)
            except AnnotationError as error:
                problem = f"malformed_polygon: {error.reason}"
        if problem is not None:  # one bad region: the task is not used (a partly labelled mask would lie)
            unused.append((item.get("id"), problem))
            continue
        seen.add(file_name)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width,
                       "label_studio_task": item.get("id")})
        for category, segmentation in converted:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": segmentation, "iscrowd": 0})
        if void is not None:  # one run of height x width ones: the whole frame
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": void,
                                "segmentation": {"size": [height, width], "counts": [0, height * width]},
                                "iscrowd": 1})
    return {"images": images, "annotations": annotations, "categories": categories}, unused
