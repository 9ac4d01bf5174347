"""What batch segmentation writes for each input, and the job-wide files.

Per input (``docs/batch_segmentation.md`` has the formats): ``OUT/masks/REL.png`` (or ``.tif``
for a GeoTIFF), the record ``OUT/masks/REL.json`` (what ``--skip_existing`` reads back),
``OUT/overlays/REL.jpg`` with ``--overlays``. A raster cut into several chunks first gets one
part per chunk under ``OUT/.parts/REL/``, merged into the final Cloud-Optimized GeoTIFF band by
band. Job-wide: ``summary.jsonl`` (most uncertain first) and ``labels_coco.json``, streamed from
the records. Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import posixpath
import shutil
import tempfile

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.common import palette
from pipelines.common import rasters
from pipelines.segment.chunks import Chunk
from pipelines.common.runner import error_record
from pipelines.common.storage import commit_temp, temp_name, upload_atomic, write_atomic, writing
from segformat.masks import IGNORE_INDEX, background_index
from segmodel import tiling

# Rows of the output GeoTIFF assembled at once when parts are merged: one block row of the
# masks' tiling, so each block is written once, whole (memory: 256 x width bytes).
MERGE_ROWS = rasters.MASK_BLOCK
# Column strips read to build a raster's COCO RLE (column-major): at most this many pixels at once.
RLE_STRIP_PIXELS = 16 << 20
# labels_coco.json annotation ids: image id x 256 + the annotation's place in its image's record
# (at most one annotation per class, and a mask has at most 255 classes), so that a re-run gives
# the same ids whatever order the workers finish in.
ANNOTATIONS_PER_IMAGE = 256
SUMMARY_KEYS = ("input", "mask", "height", "width", "class_fraction", "mean_confidence", "review_priority")


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """Where and what to write (the part of the job's configuration the writers need)."""
    output_dir: str
    class_names: tuple
    overlays: bool = False
    scores: str = ""  # "", "top" or "all" (SegmentConfig.scores)
    vectors: bool = False
    vector_min_area: int = 0
    vector_simplify: float = 0.0
    vector_format: str = "geojson"
    vector_classes: str = ""


# A scores raster's nodata: no valid pixel scores 0 (the top class's probability is at least 1/C,
# x 255 and rounded at least 1 for up to 255 classes).
SCORES_NODATA = 0


def mask_path(spec: OutputSpec, rel: str, kind: str) -> str:
    return f"{spec.output_dir}/masks/{rel}{'.tif' if kind == 'geotiff' else '.png'}"


def scores_path(spec: OutputSpec, rel: str, kind: str) -> str:
    return f"{spec.output_dir}/scores/{rel}{'.tif' if kind == 'geotiff' else '.png'}"


def probabilities_path(spec: OutputSpec, rel: str) -> str:
    """--scores all: every class's probability, one band per class (a TIFF for photos too: a PNG
    holds at most four bands)."""
    return f"{spec.output_dir}/probabilities/{rel}.tif"


def vectors_path(spec: OutputSpec, rel: str) -> str:
    from segcli.segment import VECTOR_FORMATS
    return f"{spec.output_dir}/vectors/{rel}{VECTOR_FORMATS[spec.vector_format][0]}"


def write_scores(spec: OutputSpec, info, windows) -> None:
    """A GeoTIFF's top-class scores, windows [(row, col, uint8 array)], as its scores COG
    (nodata SCORES_NODATA, averaged overviews)."""
    local = rasters.write_geotiff_mask(scores_path(spec, info.rel, "geotiff"), info, windows, None, SCORES_NODATA,
                                       rasters.OVERVIEWS_SCORES)
    shutil.rmtree(posixpath.dirname(local), ignore_errors=True)


def write_probabilities(spec: OutputSpec, info, windows) -> None:
    """Every class's probability, windows [(row, col, uint8 [h, w, C], valid [h, w])], as
    OUT/probabilities/REL.tif."""
    local = rasters.write_geotiff_bands(probabilities_path(spec, info.rel), info, windows, spec.class_names)
    shutil.rmtree(posixpath.dirname(local), ignore_errors=True)


def write_vectors(spec: OutputSpec, rel: str, regions: list, info) -> None:
    from rasterio.transform import Affine

    from pipelines.segment import vectors
    transform = Affine(*info.transform) if info.transform else None
    collection = vectors.feature_collection(regions, spec.class_names, transform, info.crs or "", info.source,
                                            spec.vector_min_area, spec.vector_simplify)
    if spec.vector_format == "geojson":
        write_atomic(vectors_path(spec, rel), json.dumps(collection).encode(), "application/geo+json")
        return
    from segcli.segment import VECTOR_FORMATS
    workdir = tempfile.mkdtemp(prefix="segpipe-vectors-")
    try:
        local = os.path.join(workdir, "layer" + VECTOR_FORMATS[spec.vector_format][0])
        vectors.write_layer(local, VECTOR_FORMATS[spec.vector_format][1], collection, info.crs or None)
        upload_atomic(local, vectors_path(spec, rel), "application/octet-stream")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def record_path(spec: OutputSpec, rel: str) -> str:
    return f"{spec.output_dir}/masks/{rel}.json"


def part_path(spec: OutputSpec, chunk: Chunk, what: str = "chunk") -> str:
    return f"{spec.output_dir}/.parts/{chunk.rel}/{what}-{chunk.grid[0]:05d}-{chunk.grid[1]:05d}.tif"


class ChunkWriter:
    """Called once per segmented chunk (``TiledSegmenter.segment``'s ``on_done``); returns the
    chunk's outcome, a small dict: ``{"record": ...}`` for a finished input, ``{"part": ...}`` for
    one chunk of a larger raster, ``{"error": ...}`` for an input that failed. Never raises."""

    def __init__(self, spec: OutputSpec):
        self.spec = spec

    def __call__(self, job, mask, stats, error) -> dict:
        chunk = job.chunk
        if error is not None:  # the input could not be read or segmented
            return {"error": failure_record(chunk.source, error)}
        stats = dict(stats)
        confidence = stats.pop("confidence_map", None)  # pixels: written here, never in an outcome
        probabilities = stats.pop("probability_map", None)
        try:
            if not chunk.whole:
                return {"part": self._write_part(chunk, mask, stats, confidence, probabilities)}
            if chunk.kind == "image":
                return {"record": self._write_photo(job, chunk, mask, stats, confidence, probabilities)}
            return {"record": self._write_raster(chunk, mask, stats, confidence, probabilities)}
        except Exception as e:  # one input's failure is its error record, never the job's end
            return {"error": write_failure(chunk.source, e)}

    def _write_photo(self, job, chunk: Chunk, mask, stats, confidence=None, probabilities=None) -> dict:
        height, width = mask.shape
        path = mask_path(self.spec, chunk.rel, "image")
        rasters.write_png(path, mask)
        info = rasters.ImageInfo(chunk.source, chunk.rel, "image", height, width)
        if self.spec.scores:
            rasters.write_png(scores_path(self.spec, chunk.rel, "image"), confidence)
        if self.spec.scores == "all":
            write_probabilities(self.spec, info, [(0, 0, probabilities, mask != IGNORE_INDEX)])
        if self.spec.vectors:
            self._write_whole_vectors(info, mask, confidence)
        if self.spec.overlays and job.image is not None:
            from PIL import Image
            buffer = io.BytesIO()
            Image.fromarray(palette.overlay(job.image, mask)).save(buffer, format="JPEG", quality=85)
            write_atomic(f"{self.spec.output_dir}/overlays/{chunk.rel}.jpg", buffer.getvalue(), "image/jpeg")
        return self._finish_from_memory(info, path, mask, stats)

    def _write_raster(self, chunk: Chunk, mask, stats, confidence=None, probabilities=None) -> dict:
        path = mask_path(self.spec, chunk.rel, "geotiff")
        local = rasters.write_geotiff_mask(path, chunk.info, [(0, 0, mask)],
                                           palette.geotiff_colormap(len(self.spec.class_names)))
        shutil.rmtree(posixpath.dirname(local), ignore_errors=True)
        if self.spec.scores:
            write_scores(self.spec, chunk.info, [(0, 0, confidence)])
        if self.spec.scores == "all":
            write_probabilities(self.spec, chunk.info, [(0, 0, probabilities, mask != IGNORE_INDEX)])
        if self.spec.vectors:
            self._write_whole_vectors(chunk.info, mask, confidence)
        return self._finish_from_memory(chunk.info, path, mask, stats)

    def _skip(self) -> tuple:
        """The classes without polygons: those --vector_classes leaves out, by default the background."""
        names = self.spec.class_names
        if self.spec.vector_classes:
            keep = set(self.spec.vector_classes.split(","))
            return tuple(i for i, name in enumerate(names) if name not in keep)
        background = background_index(names)
        return () if background is None else (background,)

    def _write_whole_vectors(self, info, mask, confidence) -> None:
        from pipelines.segment import vectors
        pieces = vectors.chunk_pieces(mask, confidence, (0, info.height, 0, info.width), info.height, info.width,
                                      self._skip(), self.spec.vector_min_area)
        write_vectors(self.spec, info.rel, pieces, info)

    def _finish_from_memory(self, info, path: str, mask, stats) -> dict:
        """The record of an input whose whole mask is in memory (its COCO runs read from it)."""
        runs = class_runs(lambda c0, c1: mask[:, c0:c1], info.height, info.width, present_classes(stats, self.spec.class_names))
        return finish_input(self.spec, info, path, stats, runs)

    def _write_part(self, chunk: Chunk, mask, stats, confidence=None, probabilities=None) -> dict:
        path = part_path(self.spec, chunk)
        part = {"path": path, "core": chunk.core, "stats": {k: np.asarray(v).tolist() for k, v in stats.items()}}
        files = [(path, mask)]
        if self.spec.scores:
            part["scores_path"] = part_path(self.spec, chunk, "scores")
            files.append((part["scores_path"], confidence))
        if self.spec.scores == "all":
            part["probabilities_path"] = part_path(self.spec, chunk, "probabilities")
            files.append((part["probabilities_path"], probabilities))
        if self.spec.vectors:
            from pipelines.segment import vectors
            part["vectors_path"] = part_path(self.spec, chunk, "vectors")[:-len(".tif")] + ".json"
            vectors.write_pieces(part["vectors_path"], vectors.chunk_pieces(
                mask, confidence, chunk.core, chunk.info.height, chunk.info.width, self._skip(),
                self.spec.vector_min_area))
        workdir = tempfile.mkdtemp(prefix="segpipe-part-")
        try:
            for target, data in files:
                local = os.path.join(workdir, "part.tif")
                rasters.write_plain_tiff(local, data)
                upload_atomic(local, target, "image/tiff")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return part


def failure_record(source: str, error: Exception) -> dict:
    from pipelines.common.images import ImageError
    if isinstance(error, ImageError):
        return error_record(source, error.reason, error.detail)
    reason = "unreadable_image" if isinstance(error, (OSError, ValueError)) else "segmentation_failed"
    return error_record(source, reason, f"{type(error).__name__}: {error}"[:500])


def write_failure(source: str, error: Exception) -> dict:
    return error_record(source, "write_failed", f"{type(error).__name__}: {error}"[:500])


def present_classes(stats, class_names) -> list:
    """The classes the machine labels carry: every class predicted somewhere, the background aside."""
    background = background_index(class_names)
    return [c for c, pixels in enumerate(np.asarray(stats["pixels"])) if c != background and pixels > 0]


def category_id(index: int, class_names) -> int:
    """A class's COCO category id in labels_coco.json: its mask index after a background (0 is
    no category), index + 1 in a table without one (COCO ids start at 1)."""
    return index if background_index(class_names) is not None else index + 1


def merge_parts(spec: OutputSpec, rel: str, outcomes: list) -> dict:
    """A raster's chunk outcomes -> its COG mask and record, or (when a chunk failed or is
    missing) its error record; the parts are deleted either way."""
    chunks = [o["chunk"] for o in outcomes]
    first = chunks[0]
    parts = [o["part"] for o in outcomes if "part" in o]
    try:
        failed = [o["error"] for o in outcomes if "error" in o]
        if failed:
            return {"error": failed[0]}
        if len({c.grid for c in chunks}) != first.count:
            return {"error": error_record(first.source, "segmentation_failed",
                                          f"{len(parts)} of {first.count} chunks came back")}
        info = first.info
        totals = tiling.sum_stats([p["stats"] for p in parts], len(spec.class_names))
        path = mask_path(spec, rel, "geotiff")
        local = rasters.write_geotiff_mask(path, info, _merged_bands(info, parts),
                                           palette.geotiff_colormap(len(spec.class_names)))
        try:
            with rasters.open_raster(local) as src:
                from rasterio.windows import Window
                runs = class_runs(lambda c0, c1: src.read(1, window=Window(c0, 0, c1 - c0, info.height)),
                                  info.height, info.width, present_classes(totals, spec.class_names))
        finally:
            shutil.rmtree(posixpath.dirname(local), ignore_errors=True)
        if spec.vectors:
            from pipelines.segment import vectors
            pieces = [piece for p in parts for piece in vectors.read_pieces(p["vectors_path"])]
            write_vectors(spec, rel, vectors.merge_pieces(pieces), info)
        if spec.scores:
            write_scores(spec, info, _merged_bands(info, parts, "scores_path", SCORES_NODATA))
        if spec.scores == "all":
            windows = ((top, col, probabilities, mask != IGNORE_INDEX) for (top, col, mask), (_, _, probabilities)
                       in zip(_merged_bands(info, parts), _merged_bands(info, parts, "probabilities_path", 0,
                                                                        len(spec.class_names))))
            write_probabilities(spec, info, windows)
        return {"record": finish_input(spec, info, path, totals, runs)}
    except Exception as e:
        return {"error": write_failure(first.source, e)}
    finally:
        if parts:
            FileSystems.delete([p[key] for p in parts for key in PART_FILES if key in p])


# The files a chunk's part may have (ChunkWriter._write_part), all deleted after the merge.
PART_FILES = ("path", "scores_path", "probabilities_path", "vectors_path")


def _merged_bands(info, parts, key: str = "path", fill: int = IGNORE_INDEX, count: int = 0):
    """(row, 0, uint8 [rows, width]) bands of MERGE_ROWS rows, each assembled from the parts
    (their ``key`` files) it crosses; with ``count``, [rows, width, count] of a multi-band part."""
    from rasterio.windows import Window
    opened = [(p["core"], rasters.open_part(p[key])) for p in parts]
    try:
        for top in range(0, info.height, MERGE_ROWS):
            bottom = min(info.height, top + MERGE_ROWS)
            band = np.full((bottom - top, info.width) + ((count,) if count else ()), fill, np.uint8)
            for (r0, r1, c0, c1), src in opened:
                a, b = max(top, r0), min(bottom, r1)
                if a < b:
                    window = Window(0, a - r0, c1 - c0, b - a)
                    band[a - top:b - top, c0:c1] = src.read(window=window).transpose(1, 2, 0) if count else \
                        src.read(1, window=window)
            yield top, 0, band
    finally:
        for _, src in opened:
            src.close()


def class_runs(read_columns, height: int, width: int, classes) -> dict:
    """Column-major RLE counts per class, read in vertical strips (never the whole raster)."""
    runs = {c: [] for c in classes}
    strip = max(1, min(width, RLE_STRIP_PIXELS // max(height, 1)))
    for col in range(0, width, strip):
        data = read_columns(col, min(width, col + strip))
        for c in classes:
            runs[c] = tiling.merge_runs(runs[c], tiling.column_runs(data == c))
    return runs


def finish_input(spec: OutputSpec, info, path: str, totals: dict, runs: dict) -> dict:
    """The input's record, also written beside its mask (what --skip_existing reads back)."""
    record = make_record(info, path, spec.class_names, totals, runs)
    write_atomic(record_path(spec, info.rel), json.dumps(record).encode(), "application/json")
    return record


def make_record(info, path, names, totals, runs) -> dict:
    """The per-input summary (docs/batch_segmentation.md) plus its COCO annotations (without ids)."""
    from pycocotools import mask as mask_utils
    pixels = np.asarray(totals["pixels"])
    confidence = np.asarray(totals["confidence"])
    valid = int(pixels.sum())
    fractions = {names[c]: float(pixels[c] / valid) for c in range(len(names)) if valid and pixels[c] > 0}
    annotations = []
    for c, counts in sorted(runs.items()):
        rle = mask_utils.frPyObjects({"size": [info.height, info.width], "counts": counts}, info.height, info.width)
        annotations.append({
            "category_id": category_id(int(c), names), "iscrowd": 0,
            "segmentation": {"size": [info.height, info.width], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "score": float(confidence[c] / max(pixels[c], 1)),
        })
    num_classes = len(names)
    mean_entropy = float(totals["entropy"]) / max(valid, 1)
    return {
        "input": info.source, "mask": path, "height": info.height, "width": info.width,
        "class_fraction": fractions,
        "mean_confidence": float(confidence.sum() / max(valid, 1)),
        # Mean pixel entropy over log(C): 0 = certain everywhere, 1 = uniform guessing.
        "review_priority": float(mean_entropy / math.log(num_classes)) if num_classes > 1 else 0.0,
        "file_name": info.rel + posixpath.splitext(info.source)[1],
        "annotations": annotations,
    }


def read_records(record_files):
    """The per-input records from the job's record files (WriteToText's file names), one at a time."""
    for name in sorted(f for batch in record_files for f in ([batch] if isinstance(batch, str) else batch)):
        with FileSystems.open(name) as handle:
            for line in handle.read().decode().splitlines():
                if line.strip():
                    yield json.loads(line)


def write_job_layers(_, record_files, spec: OutputSpec):
    """--vectors: the job-wide polygon layer OUT/segments.EXT from every segmented input's
    polygons, in file-name order (pipelines.segment.vectors.job_layers); yields an error record
    (and writes no file) when it cannot be written."""
    from pipelines.segment import vectors
    rels = sorted({posixpath.splitext(r["file_name"])[0] for r in read_records(record_files)})
    try:
        vectors.job_layers([vectors_path(spec, rel) for rel in rels], spec.output_dir, spec.vector_format)
    except Exception as e:
        from segcli.segment import VECTOR_FORMATS
        yield error_record(f"{spec.output_dir}/{vectors.LAYER}{VECTOR_FORMATS[spec.vector_format][0]}",
                           "vectors_failed", f"{type(e).__name__}: {e}"[:500])


def assemble_outputs(_, record_files, output_dir: str, class_names, model_version: str = "",
                     spec: OutputSpec | None = None) -> None:
    """Streams the per-input records into summary.jsonl (most uncertain first) and
    labels_coco.json (image ids 1..N in file-name order), never holding all annotations; and,
    when GeoTIFFs were segmented, their STAC Items and Collection (pipelines.segment.stac), listing
    the outputs ``spec`` says were written."""

    def records():
        return read_records(record_files)

    index = sorted((r["file_name"], r["review_priority"], json.dumps({k: r[k] for k in SUMMARY_KEYS}),
                    r["height"], r["width"]) for r in records())
    summary = "".join(line + "\n" for _, _, line, _, _ in sorted(index, key=lambda t: (-t[1], t[0])))
    write_atomic(f"{output_dir}/summary.jsonl", summary.encode(), "application/jsonl")
    image_ids = {}  # file name -> (image id: 1..N in file-name order, height, width)
    for name, _, _, h, w in index:
        image_ids.setdefault(name, (len(image_ids) + 1, h, w))
    with tempfile.TemporaryFile("w+") as anns_part:
        first_ann, seen = True, set()
        for record in records():
            if record["file_name"] in seen:
                continue
            seen.add(record["file_name"])
            image_id = image_ids[record["file_name"]][0]
            # Annotation ids from the image id and the annotation's place in its record: the same
            # on every run, whatever order the records arrive in (one annotation per class < 256).
            for j, ann in enumerate(record["annotations"]):
                anns_part.write(("" if first_ann else ",\n") + json.dumps(
                    dict(ann, id=image_id * ANNOTATIONS_PER_IMAGE + j, image_id=image_id)))
                first_ann = False
        images = ",\n".join(json.dumps({"id": i, "file_name": name, "height": h, "width": w})
                            for name, (i, h, w) in image_ids.items())
        background = background_index(class_names)
        categories = [{"id": category_id(i, class_names), "name": n, "supercategory": ""}
                      for i, n in enumerate(class_names) if i != background]
        temp = temp_name(f"{output_dir}/labels_coco.json")
        with writing(f"{output_dir}/labels_coco.json", temp), \
                FileSystems.create(temp, mime_type="application/json") as out:
            out.write(json.dumps({"description": "segpipe machine labels"}).join(
                ['{"info": ', f', "licenses": [], "categories": {json.dumps(categories)}, "images": [\n']).encode())
            out.write((images + '\n], "annotations": [\n').encode())
            anns_part.seek(0)
            while chunk := anns_part.read(1 << 20):
                out.write(chunk.encode())
            out.write("\n]}\n".encode())
    commit_temp(temp, f"{output_dir}/labels_coco.json")
    # the model's class table and version, for what reads the masks (segpipe review names the
    # classes and the pre-labels' model_version from it)
    write_atomic(f"{output_dir}/classes.json", json.dumps(
        {"ignore_index": IGNORE_INDEX, "classes": [{"index": i, "name": n} for i, n in enumerate(class_names)],
         **({"model_version": model_version} if model_version else {})}, indent=2).encode(), "application/json")
    if any(name.lower().endswith((".tif", ".tiff")) for name, *_ in index):  # GeoTIFFs: their STAC
        from pipelines.segment.stac import write_catalog
        write_catalog(records(), spec or OutputSpec(output_dir, tuple(class_names)), model_version)
