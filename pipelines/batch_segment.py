"""Batch segmentation: images or GeoTIFFs -> RunInference -> masks, summaries, COCO labels.

    python -m pipelines.batch_segment --model MODEL --input 'GLOB or gs://bucket/prefix/*' \\
        --output_dir OUT [--tile_size 512] [--tile_overlap 64] [--batch_size 8] [--bands 1,2,3] \\
        [--chunk_size 4096] [--skip_existing] [--overlays] [Beam options]

One path for photos and rasters (docs/architecture.md has the diagram):
  MatchFiles -> PlanChunks (a photo is one chunk; a GeoTIFF's header is read and its output cut
  into a grid of chunks) -> Spread (a Reshuffle of chunk descriptions: paths and windows)
  -> Segment (RunInference: the chunk's pixels are read right here, ahead on threads; tiles of all
  chunks in a batch pooled into model calls; blended and resolved on the accelerator; the mask
  and record written) -> a finished input's record, or a raster chunk's part file
  -> GroupParts (part paths and statistics, per raster) -> MergeParts (one Cloud-Optimized GeoTIFF)
  -> records -> Assemble: summary.jsonl (most uncertain first) and labels_coco.json, streamed.
No pixels and no scores cross a shuffle: only descriptions, part paths and statistics.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import posixpath
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from pipelines import images as image_checks
from pipelines import rasters
from pipelines import segment_outputs as outputs
from pipelines.chunks import plan_chunks
from pipelines.inference import ChunkModelHandler
from pipelines.runner import ERRORS, Progress, count, make_pipeline, run_and_summarize

LOG = logging.getLogger(__name__)
SKIPPED, PARTS = "skipped", "parts"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Batch segmentation's settings; the command line's defaults come from here."""
    model: str
    output_dir: str
    class_names: tuple
    # The training crop size: the net sees the context it was trained on.
    tile_size: int = 512
    # Pixels neighbouring tiles share, blended away; None: min(64, tile_size // 4), two fc7
    # strides of context at each edge without letting the overlap eat a small tile.
    tile_overlap: int | None = None
    # Tiles per model call: what a GPU of 16-24 GB holds for FCN-8s at 512 px with room to spare.
    batch_size: int = 8
    # Tiles' worth of chunks handed to the model at once (several photos or one raster chunk):
    # enough to pool tiles across photos and overlap reading and writing with the model.
    batch_tiles: int = 48
    bands: str | None = None
    # Largest side of a raster chunk: a 4096-px chunk is ~80 tiles (~1 s of a GPU); its blend
    # buffer is one tile row of its width (512 x 4608 x C x 4 bytes, 38 MB at 4 classes), and the
    # tile row/column it shares with each neighbour is ~11 % recomputed per direction.
    chunk_size: int = 4096
    skip_existing: bool = False
    overlays: bool = False
    # float32 by default; bfloat16 measured 1.96x faster for FCN-8s on this project's AVX512-BF16
    # CPUs with 0.024 % of pixels changing class on the demo model (README).
    precision: str = "float32"
    large_model: bool = False
    model_copies: int = 1

    def __post_init__(self):
        if self.tile_overlap is None:
            object.__setattr__(self, "tile_overlap", min(64, self.tile_size // 4))
        problems = []
        if self.tile_size < 32:
            problems.append(f"tile_size must be at least 32 (the FCN's stride), got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size:
            problems.append(f"tile_overlap must be in [0, tile_size), got {self.tile_overlap}")
        if self.batch_size < 1 or self.batch_tiles < 1 or self.model_copies < 1:
            problems.append("batch_size, batch_tiles and model_copies must be at least 1")
        if self.chunk_size < self.tile_size:
            problems.append(f"chunk_size ({self.chunk_size}) must be at least tile_size ({self.tile_size})")
        if self.precision not in ("float32", "bfloat16"):
            problems.append(f"precision must be float32 or bfloat16, got {self.precision!r}")
        if len(self.class_names) < 1:
            problems.append("the model has no classes")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def spec(self) -> outputs.OutputSpec:
        return outputs.OutputSpec(self.output_dir, tuple(self.class_names), self.overlays)


class PlanChunksFn(beam.DoFn):
    """Input path -> its chunks (or, with --skip_existing, its existing record; or an error)."""

    def __init__(self, config: SegmentConfig, input_root: str):
        self.config, self.input_root = config, input_root

    def process(self, path):
        config, spec = self.config, self.config.spec
        rel = posixpath.splitext(image_checks.relative_to(path, self.input_root))[0]
        kind = "geotiff" if rasters.is_geotiff(path) else "image"
        if config.skip_existing and FileSystems.exists(outputs.mask_path(spec, rel, kind)) \
                and FileSystems.exists(outputs.record_path(spec, rel)):
            with FileSystems.open(outputs.record_path(spec, rel)) as handle:
                count("images_skipped")
                yield beam.pvalue.TaggedOutput(SKIPPED, json.loads(handle.read()))
                return
        try:
            chunks = plan_chunks(path, rel, config.tile_size, config.tile_overlap, config.chunk_size, config.bands)
        except Exception as e:  # one unreadable raster header must not stop the job
            record = outputs.failure_record(path, e)
            count(f"images_rejected/{record['reason']}")
            yield beam.pvalue.TaggedOutput(ERRORS, record)
            return
        count("chunks", len(chunks))
        yield from chunks


class RouteOutcomesFn(beam.DoFn):
    """RunInference's (chunk, outcome) -> records (main), error records, or raster parts keyed by input."""

    def setup(self):
        self.progress = Progress("batch_segment chunks")

    def process(self, result):
        chunk, outcome = result.example, result.inference
        self.progress.tick()
        if not chunk.whole:
            yield beam.pvalue.TaggedOutput(PARTS, (chunk.rel, dict(outcome, chunk=chunk)))
        else:
            yield from finished(outcome)


class MergePartsFn(beam.DoFn):
    """(rel, its chunks' outcomes) -> the raster's record, or its error record."""

    def __init__(self, config: SegmentConfig):
        self.config = config

    def process(self, element):
        rel, outcomes = element
        yield from finished(outputs.merge_parts(self.config.spec, rel, list(outcomes)))


def finished(outcome: dict):
    """A finished input's outcome -> its record (main output) or its error record, counted."""
    if "error" in outcome:
        count(f"images_rejected/{outcome['error']['reason']}")
        yield beam.pvalue.TaggedOutput(ERRORS, outcome["error"])
    else:
        count("images_segmented")
        yield outcome["record"]


def segment_handler(config: SegmentConfig) -> ChunkModelHandler:
    return ChunkModelHandler(
        config.model, outputs.ChunkWriter(config.spec), num_classes=len(config.class_names),
        tile_size=config.tile_size, tile_overlap=config.tile_overlap, batch_size=config.batch_size,
        batch_tiles=config.batch_tiles, precision=config.precision, large_model=config.large_model,
        model_copies=config.model_copies)


class SegmentInputs(beam.PTransform):
    """Input paths -> {"records": per-input records (new and skipped), "errors": error records}."""

    def __init__(self, config: SegmentConfig, input_root: str):
        super().__init__()
        self.config, self.input_root = config, input_root

    def expand(self, paths):
        planned = paths | "PlanChunks" >> beam.ParDo(PlanChunksFn(self.config, self.input_root)).with_outputs(
            SKIPPED, ERRORS, main="chunks")
        routed = (planned.chunks
                  | "Spread" >> beam.Reshuffle()  # descriptions only: a path, a window, header facts
                  | "Segment" >> RunInference(segment_handler(self.config))
                  | "Route" >> beam.ParDo(RouteOutcomesFn()).with_outputs(ERRORS, PARTS, main="records"))
        merged = (routed[PARTS]
                  | "GroupParts" >> beam.GroupByKey()  # part paths and statistics
                  | "MergeParts" >> beam.ParDo(MergePartsFn(self.config)).with_outputs(ERRORS, main="records"))
        records = (routed.records, merged.records, planned[SKIPPED]) | "AllRecords" >> beam.Flatten()
        errors = (planned[ERRORS], routed[ERRORS], merged[ERRORS]) | "AllErrors" >> beam.Flatten()
        return {"records": records, "errors": errors}


def build_pipeline(p, input_pattern: str, config: SegmentConfig):
    paths = (p
             | "MatchInputs" >> fileio.MatchFiles(input_pattern)
             | "InputPaths" >> beam.Map(lambda m: m.path))
    segmented = paths | "SegmentInputs" >> SegmentInputs(config, image_checks.glob_root(input_pattern))
    out = config.output_dir
    record_files = (segmented["records"]
                    | "RecordsToJson" >> beam.Map(json.dumps)
                    | "WriteRecords" >> beam.io.WriteToText(f"{out}/.records/records", file_name_suffix=".jsonl"))
    _ = (p | "AssembleTrigger" >> beam.Create([None])
         | "Assemble" >> beam.Map(outputs.assemble_outputs, beam.pvalue.AsList(record_files), out,
                                  config.class_names))
    _ = (segmented["errors"]
         | "ErrorsToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(f"{out}/errors", file_name_suffix=".jsonl", num_shards=1,
                                                shard_name_template=""))
    return segmented


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(SegmentConfig)}
    parser = argparse.ArgumentParser(prog="segpipe segment", description=__doc__.split("\n\n")[0],
                                     epilog="Flags not listed here go to Beam (--runner, --project, ...).")
    parser.add_argument("--model", required=True, help="MODEL folder with model.keras and classes.json, or a "
                        ".keras file (local or gs://)")
    parser.add_argument("--input", required=True, help="glob of JPEG/PNG/GeoTIFF inputs (local or gs://)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tile_size", type=int, default=defaults["tile_size"])
    parser.add_argument("--tile_overlap", type=int, default=defaults["tile_overlap"],
                        help="pixels shared by neighbouring tiles; default min(64, tile_size // 4)")
    parser.add_argument("--batch_size", type=int, default=defaults["batch_size"], help="tiles per model call")
    parser.add_argument("--batch_tiles", type=int, default=defaults["batch_tiles"],
                        help="tiles' worth of photos or raster chunks handed to the model at once")
    parser.add_argument("--bands", default=defaults["bands"], help="GeoTIFF bands as RGB, 1-based, e.g. 4,3,2")
    parser.add_argument("--chunk_size", type=int, default=defaults["chunk_size"],
                        help="largest side of a raster chunk (rasters are cut into a grid of chunks)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default=defaults["precision"],
                        help="bfloat16: ~2x faster on CPUs with AVX512-BF16/AMX, a few pixels differ")
    parser.add_argument("--skip_existing", action="store_true", help="only segment inputs without outputs")
    parser.add_argument("--overlays", action="store_true", help="also write OUT/overlays/REL.jpg")
    parser.add_argument("--large_model", action="store_true",
                        help="one model per machine shared by all worker processes (GPU workers)")
    parser.add_argument("--model_copies", type=int, default=defaults["model_copies"],
                        help="models per machine: one per GPU")
    return parser


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    from segmodel.exported import class_names
    names = class_names(known.model, FileSystems.open)
    if image_checks.output_inside_input(known.output_dir, known.input):
        raise SystemExit(f"segpipe segment: --output_dir {known.output_dir} lies where --input {known.input} "
                         "matches: a re-run would segment its own masks; choose an output folder outside it")
    options = {k: v for k, v in vars(known).items() if k != "input"}
    try:
        config = SegmentConfig(**dict(options, output_dir=known.output_dir.rstrip("/"), class_names=names))
    except ValueError as e:
        raise SystemExit(f"segpipe segment: {e}") from None
    started = time.time()
    p = make_pipeline(beam_args, test_pipeline, save_main_session)
    build_pipeline(p, known.input, config)
    return run_and_summarize(p, "batch_segment", started, require=("images_segmented", "images_skipped"))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
