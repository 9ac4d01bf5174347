"""Batch segmentation: images or GeoTIFFs -> RunInference -> masks, summaries, COCO labels.

    python -m pipelines.batch_segment --model MODEL --input 'GLOB or gs://bucket/prefix/*' \\
        --output_dir OUT [--tile_size 512] [--tile_overlap 64] [--batch_size 8] [--bands 1,2,3] \\
        [--strip_rows 4096] [--skip_existing] [--overlays] [Beam options]

Photos (JPEG/PNG), each a few stages so a bucket of millions spreads over workers:
  MatchFiles -> ExpandTiles (decode once, cut equal-shaped overlapping tiles) -> Reshuffle
  -> RunInference (FCNModelHandler: batches of tiles -> class probabilities)
  -> BlendIntoBlocks (probabilities weighted towards each tile's centre, cut by output block)
  -> GroupByKey + StitchBlocks (blend, argmax, confidence: no seams) -> WriteMasks (PNG + record).
GeoTIFFs, any size, in bounded memory: ExpandTiles reads only the header and emits horizontal
strips -> the same RunInference step (the handler reads a strip's windows, runs the model,
blends with a two-tile-row buffer, writes a GeoTIFF part) -> MergeStrips (one tiled, compressed,
Cloud-Optimized GeoTIFF with the input's CRS and transform, copied window by window).
Both end in Assemble: summary.jsonl (most uncertain first) and labels_coco.json, streamed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import posixpath
import time

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipelines import images as image_checks
from pipelines import rasters
from pipelines.inference import FCNModelHandler
from pipelines.transforms import (ERRORS, Progress, commit_temp, count, error_record, make_pipeline, run_and_summarize,
                                  temp_name, write_atomic)
from segmodel import tiling

LOG = logging.getLogger(__name__)
INFOS, SKIPPED, BLOCKS, STRIPS = "infos", "skipped", "blocks", "strips"
# A colour per class for GeoTIFF colour tables and overlays (background transparent-ish grey).
PALETTE = [(0, 0, 0), (128, 128, 128), (220, 60, 40), (40, 90, 220), (60, 180, 75), (255, 225, 25),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def class_color(index: int):
    if index < len(PALETTE):
        return PALETTE[index]
    rng = np.random.default_rng(index)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    model: str
    output_dir: str
    class_names: tuple
    tile_size: int = 512  # the training crop size: the net sees the context it was trained on
    tile_overlap: int = 64  # two fc7 strides of context at each tile edge, blended away
    batch_size: int = 8
    bands: str | None = None
    skip_existing: bool = False
    overlays: bool = False
    # Rows of a raster segmented by one worker: 4096 x 20000 px is ~15 s of a GPU and ~8 tiles
    # of overlap recomputed per strip (~11%), and a 20000-row raster still spreads over 5 workers.
    strip_rows: int = 4096
    # float32 by default; bfloat16 measured 2.3x faster for FCN-8s on this project's AVX512-BF16
    # CPUs with 0.02 % of pixels changing class on the demo model (see README).
    precision: str = "float32"

    @property
    def block(self) -> int:
        return self.tile_size


def mask_path(config: SegmentConfig, rel: str, kind: str) -> str:
    return f"{config.output_dir}/masks/{rel}{'.tif' if kind == 'geotiff' else '.png'}"


def record_path(config: SegmentConfig, rel: str) -> str:
    return f"{config.output_dir}/masks/{rel}.json"


class ExpandTilesFn(beam.DoFn):
    """Input path -> tiles ((rel, row, col, valid), uint8 [th, tw, 3]) and the image's info."""

    def __init__(self, config: SegmentConfig, input_root: str):
        self.config, self.input_root = config, input_root

    def process(self, path):
        config = self.config
        rel = posixpath.splitext(image_checks.relative_to(path, self.input_root))[0]
        kind = "geotiff" if rasters.is_geotiff(path) else "image"
        if config.skip_existing and FileSystems.exists(mask_path(config, rel, kind)) \
                and FileSystems.exists(record_path(config, rel)):
            with FileSystems.open(record_path(config, rel)) as handle:
                count("images_skipped")
                yield beam.pvalue.TaggedOutput(SKIPPED, json.loads(handle.read()))
                return
        try:
            if kind == "geotiff":
                yield from self._geotiff(path, rel)
            else:
                with FileSystems.open(path) as handle:
                    data = handle.read()
                image = rasters.decode_image(data, image_checks.DEFAULT_MAX_PIXELS)
                h, w = image.shape[:2]
                info = rasters.ImageInfo(path, rel, "image", h, w)
                yield beam.pvalue.TaggedOutput(INFOS, (rel, info))
                for row, col, th, tw in tiling.tile_windows(h, w, config.tile_size, config.tile_overlap):
                    count("tiles")
                    yield (rel, row, col, None), np.ascontiguousarray(image[row:row + th, col:col + tw])
        except image_checks.ImageError as e:
            count(f"images_rejected/{e.reason}")
            yield beam.pvalue.TaggedOutput(ERRORS, error_record(path, e.reason, e.detail))
        except Exception as e:  # anything else about one file must not stop the job
            count("images_rejected/unreadable_image")
            yield beam.pvalue.TaggedOutput(ERRORS, error_record(path, "unreadable_image", f"{type(e).__name__}: {e}"[:500]))

    def _geotiff(self, path, rel):
        config = self.config
        info = rasters.open_geotiff(path, rel, config.bands)
        strips = max(1, math.ceil(info.height / config.strip_rows))
        count("rasters")
        for index in range(strips):
            yield beam.pvalue.TaggedOutput(STRIPS, {
                "info": info, "index": index, "row0": index * config.strip_rows,
                "row1": min(info.height, (index + 1) * config.strip_rows)})


def blend_into_blocks(element, block: int, overlap: int):
    """(tile key, PredictionResult) -> ((rel, block_row, block_col), weighted contribution)."""
    (rel, row, col, valid), result = element
    probabilities = np.asarray(result.inference, dtype=np.float32)
    th, tw = probabilities.shape[:2]
    weights = tiling.blend_weights(th, tw, overlap)
    for br, bc, tile_slice, block_slice in tiling.blocks_of_window(row, col, th, tw, block):
        w = weights[tile_slice]
        yield (rel, br, bc), (block_slice, probabilities[tile_slice] * w[..., None], w,
                              None if valid is None else valid[tile_slice])


class StitchBlockFn(beam.DoFn):
    """All contributions to one output block -> (rel, (block_row, block_col, mask, stats))."""

    def process(self, element):
        (rel, br, bc), contributions = element
        contributions = list(contributions)
        bh = max(c[0][0].stop for c in contributions)
        bw = max(c[0][1].stop for c in contributions)
        num_classes = contributions[0][1].shape[-1]
        scores = np.zeros((bh, bw, num_classes), np.float32)
        weights = np.zeros((bh, bw), np.float32)
        valid = np.ones((bh, bw), bool)
        for block_slice, weighted, w, tile_valid in contributions:
            scores[block_slice] += weighted
            weights[block_slice] += w
            if tile_valid is not None:
                valid[block_slice] &= tile_valid
        mask, stats = tiling.resolve(scores, weights, valid, num_classes)
        yield rel, (br, bc, mask, stats)


def class_runs(read_strip, height: int, width: int, classes, strip: int = 512) -> dict:
    """Column-major RLE counts per class, read in vertical strips (never the whole raster)."""
    runs = {c: [] for c in classes}
    for col in range(0, width, strip):
        data = read_strip(col, min(width, col + strip))
        for c in classes:
            runs[c] = tiling.merge_runs(runs[c], tiling.column_runs(data == c))
    return runs


class WriteMaskFn(beam.DoFn):
    """(rel, {infos, blocks}) -> the mask file, its record JSON beside it, and the record."""

    def __init__(self, config: SegmentConfig):
        self.config = config

    def setup(self):
        self.progress = Progress("batch_segment images")

    def process(self, element):
        rel, grouped = element
        self.progress.tick()
        infos = list(grouped[INFOS])
        if not infos:
            return
        info = infos[0]
        config = self.config
        names = config.class_names
        try:
            blocks = list(grouped[BLOCKS])
            totals = tiling.sum_stats((stats for _, _, _, stats in blocks), len(names))
            path = mask_path(config, rel, info.kind)
            present = [c for c in range(1, len(names)) if totals["pixels"][c] > 0]
            full = np.zeros((info.height, info.width), np.uint8)
            for br, bc, mask, _ in blocks:
                full[br * config.block:br * config.block + mask.shape[0],
                     bc * config.block:bc * config.block + mask.shape[1]] = mask
            rasters.write_png(path, full)
            if config.overlays:
                self._overlay(info, full)
            runs = class_runs(lambda c0, c1: full[:, c0:c1], info.height, info.width, present)
        except Exception as e:
            yield from write_failed(info, e)
            return
        yield finish_image(config, info, path, totals, runs)

    def _overlay(self, info, mask):
        from PIL import Image
        with FileSystems.open(info.source) as handle:
            image = rasters.decode_image(handle.read(), image_checks.DEFAULT_MAX_PIXELS).astype(np.float32)
        colors = np.array([class_color(i) for i in range(256)], np.float32)
        blended = np.where((mask[..., None] > 0) & (mask[..., None] != 255), 0.5 * image + 0.5 * colors[mask], image)
        import io
        buffer = io.BytesIO()
        Image.fromarray(blended.astype(np.uint8)).save(buffer, format="JPEG", quality=85)
        write_atomic(f"{self.config.output_dir}/overlays/{info.rel}.jpg", buffer.getvalue(), "image/jpeg")


class MergeStripsFn(beam.DoFn):
    """(rel, strip results) -> the raster's mask as one Cloud-Optimized GeoTIFF, its record."""

    def __init__(self, config: SegmentConfig):
        self.config = config

    def process(self, element):
        import shutil
        from rasterio.windows import Window
        rel, predictions = element
        predictions = list(predictions)
        info = predictions[0].example["info"]
        results = sorted((r.inference for r in predictions), key=lambda r: r["index"])
        config, names = self.config, self.config.class_names
        totals = tiling.sum_stats((r["stats"] for r in results), len(names))
        path = mask_path(config, rel, "geotiff")
        colormap = {i: class_color(i) + (255,) for i in range(len(names))}
        colormap[255] = (0, 0, 0, 0)

        def windows():  # the parts, 256 rows at a time: never the whole raster in memory
            for result in results:
                with rasters.open_raster(result["part"]) as part:
                    for row in range(0, part.height, 256):
                        rows = min(256, part.height - row)
                        yield result["row0"] + row, 0, part.read(1, window=Window(0, row, part.width, rows))

        try:
            with rasters.gdal_env():
                local = rasters.write_geotiff_mask(path, info, windows(), colormap)
            present = [c for c in range(1, len(names)) if totals["pixels"][c] > 0]
            with rasters.gdal_env(), rasters.open_raster(local) as src:
                runs = class_runs(lambda c0, c1: src.read(1, window=Window(c0, 0, c1 - c0, info.height)),
                                  info.height, info.width, present)
            shutil.rmtree(posixpath.dirname(local), ignore_errors=True)
            FileSystems.delete([r["part"] for r in results])
        except Exception as e:
            yield from write_failed(info, e)
            return
        yield finish_image(config, info, path, totals, runs)


def write_failed(info, error):
    count("images_rejected/write_failed")
    yield beam.pvalue.TaggedOutput(ERRORS, error_record(info.source, "write_failed",
                                                        f"{type(error).__name__}: {error}"[:500]))


def finish_image(config: SegmentConfig, info, path: str, totals: dict, runs: dict) -> dict:
    """The image's record, also written beside its mask (what --skip_existing reads back)."""
    record = make_record(info, path, config.class_names, totals, runs)
    write_atomic(record_path(config, info.rel), json.dumps(record).encode(), "application/json")
    count("images_segmented")
    return record


def make_record(info, path, names, totals, runs) -> dict:
    """The per-image summary (CONTRACT.md section 4) plus its COCO annotations (without ids)."""
    from pycocotools import mask as mask_utils
    valid = int(totals["pixels"].sum())
    fractions = {names[c]: float(totals["pixels"][c] / valid) for c in range(len(names))
                 if valid and totals["pixels"][c] > 0}
    annotations = []
    for c, counts in sorted(runs.items()):
        rle = mask_utils.frPyObjects({"size": [info.height, info.width], "counts": counts}, info.height, info.width)
        annotations.append({
            "category_id": int(c), "iscrowd": 0,
            "segmentation": {"size": [info.height, info.width], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "score": float(totals["confidence"][c] / max(totals["pixels"][c], 1)),
        })
    num_classes = len(names)
    mean_entropy = totals["entropy"] / max(valid, 1)
    return {
        "input": info.source, "mask": path, "height": info.height, "width": info.width,
        "class_fraction": fractions,
        "mean_confidence": float(totals["confidence"].sum() / max(valid, 1)),
        # Mean pixel entropy over log(C): 0 = certain everywhere, 1 = uniform guessing.
        "review_priority": float(mean_entropy / math.log(num_classes)) if num_classes > 1 else 0.0,
        "file_name": info.rel + posixpath.splitext(info.source)[1],
        "annotations": annotations,
    }


SUMMARY_KEYS = ("input", "mask", "height", "width", "class_fraction", "mean_confidence", "review_priority")


def assemble_outputs(_, record_files, output_dir: str, class_names) -> None:
    """Streams the per-image records into summary.jsonl (most uncertain first) and
    labels_coco.json (image ids 1..N in file-name order), never holding all annotations."""
    import tempfile
    files = sorted(f for batch in record_files for f in ([batch] if isinstance(batch, str) else batch))

    def records():
        for name in files:
            with FileSystems.open(name) as handle:
                for line in handle.read().decode().splitlines():
                    if line.strip():
                        yield json.loads(line)

    index = sorted((r["file_name"], r["review_priority"], json.dumps({k: r[k] for k in SUMMARY_KEYS}))
                   for r in records())
    ids = {name: k + 1 for k, (name, _, _) in enumerate(index)}
    summary = "".join(line + "\n" for _, _, line in sorted(index, key=lambda t: (-t[1], t[0])))
    write_atomic(f"{output_dir}/summary.jsonl", summary.encode(), "application/jsonl")
    with tempfile.TemporaryFile("w+") as images_part, tempfile.TemporaryFile("w+") as anns_part:
        first_image, first_ann, ann_id = True, True, 0
        seen = set()
        for record in records():
            if record["file_name"] in seen:
                continue
            seen.add(record["file_name"])
            image_id = ids[record["file_name"]]
            images_part.write(("" if first_image else ",\n") + json.dumps(
                {"id": image_id, "file_name": record["file_name"], "height": record["height"],
                 "width": record["width"]}))
            first_image = False
            for ann in record["annotations"]:
                ann_id += 1
                anns_part.write(("" if first_ann else ",\n") + json.dumps(dict(ann, id=ann_id, image_id=image_id)))
                first_ann = False
        categories = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(class_names) if i > 0]
        temp = temp_name(f"{output_dir}/labels_coco.json")
        with FileSystems.create(temp, mime_type="application/json") as out:
            out.write(json.dumps({"description": "segpipe machine labels"}).join(
                ['{"info": ', f', "licenses": [], "categories": {json.dumps(categories)}, "images": [\n']).encode())
            for part, closing in ((images_part, '\n], "annotations": [\n'), (anns_part, "\n]}\n")):
                part.seek(0)
                while chunk := part.read(1 << 20):
                    out.write(chunk.encode())
                out.write(closing.encode())
    commit_temp(temp, f"{output_dir}/labels_coco.json")


def build_pipeline(p, input_pattern: str, config: SegmentConfig, large_model=False, model_copies=1):
    planned = (p
               | "MatchInputs" >> fileio.MatchFiles(input_pattern)
               | "InputPaths" >> beam.Map(lambda m: m.path)
               | "ExpandTiles" >> beam.ParDo(ExpandTilesFn(config, image_checks.glob_root(input_pattern)))
               .with_outputs(INFOS, STRIPS, SKIPPED, ERRORS, main="tiles"))
    handler = KeyedModelHandler(FCNModelHandler(config.model, config.batch_size, large_model, model_copies,
                                                strip_config=config, precision=config.precision))
    # Photo tiles and raster strips go through one RunInference step (one model per worker).
    predictions = ((planned.tiles, planned[STRIPS] | "KeyStrips" >> beam.Map(lambda s: ((s["info"].rel, s["index"]), s)))
                   | "TilesAndStrips" >> beam.Flatten()
                   | "Spread" >> beam.Reshuffle()
                   | "RunInference" >> RunInference(handler)
                   | "TilesOrStrips" >> beam.Partition(lambda kv, n: int(isinstance(kv[1].example, dict)), 2))
    # Photos: tile probabilities stitched per output block.
    blocks = (predictions[0]
              | "BlendIntoBlocks" >> beam.FlatMap(blend_into_blocks, config.block, config.tile_overlap)
              | "GroupBlocks" >> beam.GroupByKey()
              | "StitchBlocks" >> beam.ParDo(StitchBlockFn()))
    written = ({INFOS: planned[INFOS], BLOCKS: blocks}
               | "GroupByImage" >> beam.CoGroupByKey()
               | "WriteMasks" >> beam.ParDo(WriteMaskFn(config)).with_outputs(ERRORS, main="records"))
    # Rasters: strips (each already segmented and written as a part) merged per raster.
    rasters_written = (predictions[1]
                       | "KeyByRaster" >> beam.Map(lambda kv: (kv[1].example["info"].rel, kv[1]))
                       | "GroupStrips" >> beam.GroupByKey()
                       | "MergeStrips" >> beam.ParDo(MergeStripsFn(config)).with_outputs(ERRORS, main="records"))
    out = config.output_dir
    record_files = ((written.records, rasters_written.records, planned[SKIPPED]) | "AllRecords" >> beam.Flatten()
                    | "RecordsToJson" >> beam.Map(json.dumps)
                    | "WriteRecords" >> beam.io.WriteToText(f"{out}/.records/records", file_name_suffix=".jsonl"))
    _ = (p | "AssembleTrigger" >> beam.Create([None])
         | "Assemble" >> beam.Map(assemble_outputs, beam.pvalue.AsList(record_files), out, config.class_names))
    _ = ((planned[ERRORS], written[ERRORS], rasters_written[ERRORS]) | "AllErrors" >> beam.Flatten()
         | "ErrorsToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(f"{out}/errors", file_name_suffix=".jsonl", num_shards=1,
                                                shard_name_template=""))


def read_class_names(model: str) -> tuple:
    directory = model.rsplit("/", 1)[0] if model.endswith(".keras") else model.rstrip("/")
    with FileSystems.open(f"{directory}/classes.json") as handle:
        return tuple(c["name"] for c in json.loads(handle.read())["classes"])


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Flags not listed here go to Beam.")
    parser.add_argument("--model", required=True, help="MODEL dir with model.keras and classes.json (local or gs://)")
    parser.add_argument("--input", required=True, help="glob of JPEG/PNG/GeoTIFF inputs (local or gs://)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tile_size", type=int, default=512)
    parser.add_argument("--tile_overlap", type=int, default=None,
                        help="pixels shared by neighbouring tiles; default min(64, tile_size // 4)")
    parser.add_argument("--batch_size", type=int, default=8, help="tiles per model call")
    parser.add_argument("--bands", default=None, help="GeoTIFF bands as RGB, 1-based, e.g. 4,3,2")
    parser.add_argument("--strip_rows", type=int, default=4096,
                        help="raster rows segmented by one worker (GeoTIFFs are split into strips)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: ~2x faster on CPUs with AVX512-BF16/AMX, a few pixels differ")
    parser.add_argument("--skip_existing", action="store_true", help="only segment inputs without outputs")
    parser.add_argument("--overlays", action="store_true", help="also write OUT/overlays/REL.jpg")
    parser.add_argument("--large_model", action="store_true",
                        help="one model per machine shared by all worker processes (GPU workers)")
    parser.add_argument("--model_copies", type=int, default=1, help="models per machine: one per GPU")
    return parser


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    if known.tile_overlap is None:
        known.tile_overlap = min(64, known.tile_size // 4)
    if not 0 <= known.tile_overlap < known.tile_size:
        raise SystemExit("--tile_overlap must be in [0, tile_size)")
    config = SegmentConfig(known.model, known.output_dir.rstrip("/"), read_class_names(known.model), known.tile_size,
                           known.tile_overlap, known.batch_size, known.bands, known.skip_existing, known.overlays,
                           known.strip_rows, known.precision)
    started = time.time()
    p = make_pipeline(beam_args, test_pipeline, save_main_session)
    build_pipeline(p, known.input, config, known.large_model, known.model_copies)
    return run_and_summarize(p, "batch_segment", started)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
