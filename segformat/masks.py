"""COCO instance annotations -> one per-pixel class-id mask (NumPy + pycocotools only).

The rules are the ones in docs/datasets.md ("Mask semantics"):

* 0 is background, 255 (``IGNORE_INDEX``) is "ignore", never a class;
* polygons, uncompressed RLE and compressed RLE are rasterized by pycocotools
  (``frPyObjects`` + ``merge`` + ``decode``), exactly as ``COCO.annToMask`` does;
* non-crowd instances are painted largest first (ties: ascending annotation id), so
  small objects end up on top;
* crowd regions become 255 where no painted instance covers them (``crowd="ignore"``),
  are painted like instances (``"class"``) or are dropped (``"drop"``);
* ``overlap="ignore"`` turns pixels covered by two or more painted instances into 255.

Everything that could crash or exhaust pycocotools' C code (NaN, 1e9 coordinates whose
perimeter it allocates for, RLE counts that overrun the buffer) is rejected *before* it
reaches pycocotools, with a reason string that the pipelines count and report.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

IGNORE_INDEX = 255
# 255 is reserved, 0 is background: at most 254 real classes fit in an 8-bit mask.
MAX_CLASSES = 254

CROWD_MODES = ("ignore", "class", "drop")
OVERLAP_MODES = ("smaller_on_top", "ignore")

# The 20 PASCAL VOC categories by COCO id, in VOC index order (docs/datasets.md; torchvision's
# references/segmentation/coco_utils.py uses the same list).
VOC_COCO_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
VOC_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor")


class InputError(ValueError):
    """An input that cannot be used: ``reason`` is a short snake_case key (an error record's
    ``reason`` and a counter's name), ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AnnotationError(InputError):
    """An annotation that cannot be rasterized."""


def fallback_class_name(index: int) -> str:
    """The name of a class its table leaves unnamed: ``background`` for 0, else ``class_<index>``."""
    return "background" if index == 0 else f"class_{index}"


@dataclasses.dataclass(frozen=True)
class Instance:
    """One annotation, validated and encoded as a single compressed RLE."""
    annotation_id: int
    class_index: int
    rle: dict
    iscrowd: bool


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_polygon(coords: Sequence, height: int, width: int) -> list:
    """A flat [x1, y1, x2, y2, ...] polygon, checked; returned as a list of floats. Plain Python:
    a COCO polygon has tens of numbers, where NumPy's per-call cost would dominate."""
    if not isinstance(coords, (list, tuple)):
        raise AnnotationError("malformed_segmentation", "a polygon must be a list of numbers")
    try:
        values = [float(v) for v in coords]
    except (TypeError, ValueError):
        raise AnnotationError("malformed_segmentation", "a polygon must be a flat list of numbers") from None
    if not all(map(math.isfinite, values)):
        raise AnnotationError("non_finite_coordinates", "NaN or infinite polygon coordinate")
    if len(values) % 2:
        raise AnnotationError("malformed_segmentation", "odd number of polygon coordinates")
    if not values:
        return values
    # pycocotools' rasterizer allocates memory proportional to the polygon's perimeter in
    # pixels; one coordinate of 1e9 takes the process down. Real exports overshoot the border
    # by a few pixels; anything more than one image size outside is a broken annotation.
    margin = max(height, width)
    xs, ys = values[0::2], values[1::2]
    if min(xs) < -margin or max(xs) > width + margin or min(ys) < -margin or max(ys) > height + margin:
        raise AnnotationError("coordinates_out_of_range",
                              f"polygon reaches beyond one image size outside {width}x{height}")
    return values


def _decode_counts(chars: np.ndarray):
    """Characters (minus 48) of complete compressed-RLE counts -> (stored values, index of each
    count's last character). pycocotools' ``rleFrString`` inner loop, vectorised."""
    last = np.flatnonzero((chars & 0x20) == 0)  # a count's last character has no "more" bit
    first = np.concatenate(([0], last[:-1] + 1))
    length = last - first + 1
    if length.size and length.max() > 12:
        raise AnnotationError("malformed_rle", "run length overflows 64 bits")
    shift = 5 * (np.arange(chars.size) - np.repeat(first, length))
    values = np.add.reduceat((chars & 0x1F) << shift, first) if chars.size else np.zeros(0, np.int64)
    # a set 0x10 bit in the last character sign-extends: x | (-1 << 5 * length) == x - 2 ** (5 * length)
    values -= np.where(chars[last] & 0x10, np.left_shift(1, 5 * length), 0)
    return values, last


def _undelta(runs: np.ndarray) -> np.ndarray:
    """From the fourth count on, each is stored as the difference to the one two places back."""
    runs[1::2] = np.cumsum(runs[1::2])
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def rle_counts(counts) -> np.ndarray:
    """The run lengths (zeros first, then ones, alternating) of a COCO compressed-RLE string:
    pycocotools' ``rleFrString``, vectorised with NumPy.

    pycocotools does not check a string before writing its runs into an h*w buffer, so a bad
    string is a buffer overrun; this decodes and checks the counts without touching pixels.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    chars = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, np.int64)
    if chars.min() < 0 or chars.max() > 63:
        raise AnnotationError("malformed_rle", "invalid character in compressed RLE")
    if chars[-1] & 0x20:
        raise AnnotationError("malformed_rle", "compressed RLE ends inside a count")
    runs = _undelta(_decode_counts(chars)[0])
    if runs.size and runs.min() < 0:
        raise AnnotationError("malformed_rle", "negative run length in compressed RLE")
    return runs


def _runs_of_many(strings) -> list:
    """rle_counts of several already-validated strings, their characters decoded in one pass
    (an image's instances: a third of the NumPy calls of decoding them one by one)."""
    chars = np.frombuffer(b"".join(strings), np.uint8).astype(np.int64) - 48
    values, last = _decode_counts(chars)
    # string i's counts are those whose last character lies before the string's end
    bounds = np.searchsorted(last, np.cumsum([len(s) for s in strings]), side="left").tolist()
    return [_undelta(values[a:b]) for a, b in zip([0] + bounds[:-1], bounds)]


def compressed_rle_length(counts) -> int:
    """Total pixel count encoded by a COCO compressed-RLE string."""
    return int(rle_counts(counts).sum())


def _foreground_pixels(runs: np.ndarray) -> np.ndarray:
    """Column-major flat indices of the pixels in an RLE's runs of ones."""
    ends = np.cumsum(runs)
    starts, lengths = (ends - runs)[1::2], runs[1::2]
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    # run j covers starts[j] .. starts[j] + lengths[j] - 1
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())


def annotation_rle(segmentation, height: int, width: int) -> dict:
    """Validates one COCO ``segmentation`` and returns it as a single compressed RLE.

    Accepts a list of polygons, one flat polygon ``[x1, y1, ...]``, an uncompressed RLE
    (``counts`` as a list of ints) or a compressed RLE (``counts`` as a string).
    Parts of a multi-part polygon with fewer than 3 points are left out (pycocotools would
    read a 4-number part as a box); if none is left the annotation is rejected.
    """
    if segmentation is None or (isinstance(segmentation, (list, dict)) and len(segmentation) == 0):
        raise AnnotationError("empty_segmentation")
    if isinstance(segmentation, list):
        polygons = [segmentation] if all(_is_number(v) for v in segmentation) else segmentation
        kept = []
        for polygon in polygons:
            values = _check_polygon(polygon, height, width)
            if len(values) >= 6:
                kept.append(values)
        if not kept:
            raise AnnotationError("polygon_under_3_points")
        return mask_utils.merge(mask_utils.frPyObjects(kept, height, width))
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or [int(v) if _is_number(v) else None for v in size] != [height, width]):
            raise AnnotationError("rle_size_mismatch", f"RLE size {size} != image size [{height}, {width}]")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise AnnotationError("malformed_rle", "uncompressed RLE counts must be non-negative ints")
            total = sum(counts)
            if total != height * width:
                raise AnnotationError("rle_length_mismatch", f"RLE covers {total} pixels, image has {height * width}")
            return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        if isinstance(counts, (str, bytes)):
            total = compressed_rle_length(counts)
            if total != height * width:
                raise AnnotationError("rle_length_mismatch", f"RLE covers {total} pixels, image has {height * width}")
            data = counts.encode("ascii") if isinstance(counts, str) else counts
            return {"size": [height, width], "counts": data}
        raise AnnotationError("malformed_rle", "RLE counts must be a list of ints or a string")
    raise AnnotationError("malformed_segmentation", f"unsupported segmentation type {type(segmentation).__name__}")


def paint_class_mask(height: int, width: int, instances: Iterable[Instance],
                     crowd: str = "ignore", overlap: str = "smaller_on_top") -> np.ndarray:
    """Paints validated instances into an (height, width) uint8 class-id mask."""
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
    instances = list(instances)
    painted = [i for i in instances if not i.iscrowd or crowd == "class"]
    crowds = [i for i in instances if i.iscrowd and crowd == "ignore"]

    # COCO RLEs run down the columns, so the mask is column-major (Fortran) and runs map to
    # contiguous ranges. Unions and overlaps are computed on the RLEs (pycocotools' C code).
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    painted_rles = []
    if painted:
        areas = mask_utils.area([i.rle for i in painted])
        order = sorted(range(len(painted)), key=lambda k: (-int(areas[k]), painted[k].annotation_id))
        # Painted straight from the runs: the cost is each object's area, not a full
        # height x width decode per instance (pycocotools' decode was half the job's time).
        flat = mask.ravel(order="F")  # a view of the column-major mask
        all_runs = _runs_of_many([painted[k].rle["counts"] for k in order])
        for k, runs in zip(order, all_runs):
            flat[_foreground_pixels(runs)] = painted[k].class_index
        painted_rles = [painted[k].rle for k in order]
    if overlap == "ignore" and len(painted_rles) > 1:
        overlaps, union = [], painted_rles[0]
        for rle in painted_rles[1:]:
            overlaps.append(mask_utils.merge([union, rle], intersect=True))
            union = mask_utils.merge([union, rle])
        np.copyto(mask, np.uint8(IGNORE_INDEX), where=mask_utils.decode(mask_utils.merge(overlaps)).view(bool))
    if crowds:
        uncovered = mask_utils.decode(mask_utils.merge([i.rle for i in crowds])).view(bool)
        if painted_rles:  # only crowd pixels that no painted instance covers
            uncovered = uncovered & ~mask_utils.decode(mask_utils.merge(painted_rles)).view(bool)
        np.copyto(mask, np.uint8(IGNORE_INDEX), where=uncovered)
    return mask  # column-major; np.asarray(mask, order="C") if a consumer needs rows


def class_pixel_counts(mask: np.ndarray, values=None) -> np.ndarray:
    """Pixel count per mask value 0..255.

    ``values``: every non-zero value the mask may hold, when the caller knows them (the classes
    it painted, plus 255): then only those are counted and 0 gets the rest, about 5x cheaper
    than a full histogram (np.bincount widens every uint8 pixel to int64 first).
    """
    flat = mask.ravel(order="K")  # "K": no copy of a column-major mask
    if values is None:
        return np.bincount(flat, minlength=256)
    counts = np.zeros(256, np.int64)
    for value in set(values) - {0}:
        counts[value] = np.count_nonzero(flat == value)
    counts[0] = flat.size - counts.sum()
    return counts


# --- class tables ------------------------------------------------------------------------------

def background_index(class_names):
    """0 when a class table's first class is the background (what no label covers: the COCO job
    and the demo number classes so), else None: a table without one (CamVid's first class is sky)
    has every class drawn and counted as a label, and unlabelled pixels are void (255)."""
    return 0 if len(class_names) and class_names[0] == "background" else None


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """Which COCO category becomes which mask index, and the names that go to classes.json."""
    category_to_index: dict  # COCO category id -> mask index (0..254 or 255)
    names: tuple  # names[i] is the name of mask index i; names[0] is "background" unless the table says
    coco_ids: tuple  # coco_ids[i]: the COCO category id of index i, or None
    # every category id the dataset declares: tells "not selected by --classes" from "unknown"
    known_category_ids: frozenset = frozenset()

    def to_json(self) -> dict:
        classes = []
        for index, name in enumerate(self.names):
            entry = {"index": index, "name": name}
            if self.coco_ids[index] is not None:
                entry["coco_id"] = self.coco_ids[index]
            classes.append(entry)
        return {"ignore_index": IGNORE_INDEX, "classes": classes}


def _table_from_classes_json(doc: dict, known: frozenset) -> ClassTable:
    """A table given whole, in classes.json's own form: each class's index, name and coco_id
    (a model's or a dataset's table, reused; index 255 entries name categories to ignore)."""
    entries = sorted(doc["classes"], key=lambda c: int(c["index"]))
    mapping = {int(c["coco_id"]): int(c["index"]) for c in entries if c.get("coco_id") is not None}
    kept = [c for c in entries if int(c["index"]) != IGNORE_INDEX]
    if [int(c["index"]) for c in kept] != list(range(len(kept))) or len(kept) > MAX_CLASSES + 1:
        raise ValueError("a classes.json table needs indices 0..N-1 (and 255 for ignored categories)")
    return ClassTable(mapping, tuple(str(c["name"]) for c in kept),
                      tuple(None if c.get("coco_id") is None else int(c["coco_id"]) for c in kept), known)


def build_class_table(categories: Sequence[dict], spec="all") -> ClassTable:
    """Class table for ``--classes all|voc|<mapping>``.

    ``spec`` is ``"all"``, ``"voc"``, a user mapping (the parsed CLASSES.json) from category id
    (int or decimal string) or name to mask index, or a whole table in classes.json's form
    (``{"classes": [{"index", "name", "coco_id"}, ...]}``: names as given, index 0 included).
    """
    by_id = {int(c["id"]): c for c in categories}
    known = frozenset(by_id)
    if spec == "all":
        ids = sorted(by_id)
        if len(ids) > MAX_CLASSES:
            raise ValueError(f"{len(ids)} categories do not fit an 8-bit mask; pass --classes FILE")
        names = ("background",) + tuple(str(by_id[i].get("name", i)) for i in ids)
        return ClassTable({cid: k + 1 for k, cid in enumerate(ids)}, names, (None,) + tuple(ids), known)
    if spec == "voc":
        names = ("background",) + tuple(
            str(by_id[cid].get("name", VOC_NAMES[k])) if cid in by_id else VOC_NAMES[k]
            for k, cid in enumerate(VOC_COCO_IDS))
        return ClassTable({cid: k + 1 for k, cid in enumerate(VOC_COCO_IDS)}, names, (None,) + VOC_COCO_IDS, known)
    if isinstance(spec, dict) and isinstance(spec.get("classes"), list):
        return _table_from_classes_json(spec, known)
    if isinstance(spec, dict):
        by_name = {str(c.get("name")): int(c["id"]) for c in categories}
        mapping = {}
        for key, index in spec.items():
            index = int(index)
            if not (0 <= index <= MAX_CLASSES or index == IGNORE_INDEX):
                raise ValueError(f"class index {index} for {key!r} must be 0..{MAX_CLASSES} or {IGNORE_INDEX}")
            if str(key) in by_name:
                mapping[by_name[str(key)]] = index
            elif str(key).lstrip("-").isdigit():
                mapping[int(key)] = index
            else:
                raise ValueError(f"--classes mapping names unknown category {key!r}")
        top = max([i for i in mapping.values() if i != IGNORE_INDEX], default=0)
        names, ids = ["background"], [None]
        for index in range(1, top + 1):
            members = sorted(cid for cid, i in mapping.items() if i == index)
            names.append("+".join(str(by_id[c].get("name", c)) if c in by_id else str(c) for c in members)
                         or fallback_class_name(index))
            ids.append(members[0] if len(members) == 1 else None)
        return ClassTable(mapping, tuple(names), tuple(ids), known)
    raise ValueError(f"--classes must be all, voc or a mapping, got {spec!r}")
