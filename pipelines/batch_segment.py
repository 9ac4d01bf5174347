"""Batch segmentation: images or GeoTIFFs -> RunInference -> masks, summaries, COCO labels.

    python -m pipelines.batch_segment --model MODEL --input 'GLOB or gs://bucket/prefix/*' \\
        --output_dir OUT [--tile_size 512] [--tile_overlap 64] [--batch_size 8] [--bands 1,2,3] \\
        [--chunk_size 4096] [--skip_existing] [--overlays] [--scores [all]] [--vectors] [Beam options]

One path for photos and rasters (docs/architecture.md has the diagram):
  MatchFiles -> PlanChunks (a photo is one chunk; a GeoTIFF's header is read and its output cut
  into a grid of chunks) -> Spread (a Reshuffle of chunk descriptions: paths and windows)
  -> Segment (RunInference: the chunk's pixels are read right here, ahead on threads; tiles of all
  chunks in a batch pooled into model calls; blended and resolved on the accelerator; the mask
  and record written) -> a finished input's record, or a raster chunk's part file
  -> GroupParts (part paths and statistics, per raster) -> MergeParts (one Cloud-Optimized GeoTIFF)
  -> records -> Assemble: summary.jsonl (most uncertain first) and labels_coco.json, streamed; STAC
  -> with --vectors, JobLayers: OUT/segments.gpkg from every input's polygons, one input at a time.
No pixels and no scores cross a shuffle: only descriptions, part paths and statistics.
"""
from __future__ import annotations

import json
import logging
import posixpath
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from pipelines.common import images as image_checks
from pipelines.common import rasters
from pipelines.segment import outputs
from pipelines.segment.chunks import plan_chunks
from pipelines.segment.inference import ChunkModelHandler
from pipelines.common.runner import ERRORS, Progress, count, make_pipeline, run_and_summarize
from pipelines.common.storage import remove_stale_temporaries
from segcli.segment import SegmentConfig, make_parser

LOG = logging.getLogger(__name__)
SKIPPED, PARTS = "skipped", "parts"


def output_spec(config: SegmentConfig) -> outputs.OutputSpec:
    return outputs.OutputSpec(config.output_dir, tuple(config.class_names), config.overlays, config.scores,
                              config.vectors, config.vector_min_area, config.vector_simplify, config.vector_format,
                              config.vector_classes)


class PlanChunksFn(beam.DoFn):
    """Input path -> its chunks (or, with --skip_existing, its existing record; or an error)."""

    def __init__(self, config: SegmentConfig, input_root: str):
        self.config, self.input_root = config, input_root

    def process(self, path):
        config, spec = self.config, output_spec(self.config)
        rel = posixpath.splitext(image_checks.relative_to(path, self.input_root))[0]
        kind = "geotiff" if rasters.is_geotiff(path) else "image"
        if config.skip_existing and FileSystems.exists(outputs.mask_path(spec, rel, kind)) \
                and FileSystems.exists(outputs.record_path(spec, rel)) \
                and (not spec.scores or FileSystems.exists(outputs.scores_path(spec, rel, kind))) \
                and (spec.scores != "all" or FileSystems.exists(outputs.probabilities_path(spec, rel))) \
                and (not spec.vectors or FileSystems.exists(outputs.vectors_path(spec, rel))):
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
        yield from finished(outputs.merge_parts(output_spec(self.config), rel, list(outcomes)))


def finished(outcome: dict):
    """A finished input's outcome -> its record (main output) or its error record, counted."""
    if "error" in outcome:
        count(f"images_rejected/{outcome['error']['reason']}")
        yield beam.pvalue.TaggedOutput(ERRORS, outcome["error"])
    else:
        count("images_segmented")
        yield outcome["record"]


def counted_error(record: dict) -> dict:
    """A job-wide output's error record, counted as such (no input was rejected)."""
    count(f"outputs_failed/{record['reason']}")
    return record


def segment_handler(config: SegmentConfig) -> ChunkModelHandler:
    return ChunkModelHandler(
        config.model, outputs.ChunkWriter(output_spec(config)), num_classes=len(config.class_names),
        tile_size=config.tile_size, tile_overlap=config.tile_overlap, batch_size=config.batch_size,
        batch_tiles=config.batch_tiles, precision=config.precision, tta_scales=config.tta_scales,
        tta_flip=config.tta_flip, large_model=config.large_model,
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
                                  config.class_names, config.model_version, output_spec(config)))
    errors = segmented["errors"]
    if config.vectors:  # the job-wide polygon layer, from every input's polygons
        layer_errors = (p | "LayersTrigger" >> beam.Create([None])
                        | "JobLayers" >> beam.FlatMap(outputs.write_job_layers, beam.pvalue.AsList(record_files),
                                                      output_spec(config))
                        | "CountLayerErrors" >> beam.Map(counted_error))
        errors = (errors, layer_errors) | "AllJobErrors" >> beam.Flatten()
    _ = (errors
         | "ErrorsToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(f"{out}/errors", file_name_suffix=".jsonl", num_shards=1,
                                                shard_name_template=""))
    return segmented


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    from pipelines.segment.inference import model_identity
    names, version = model_identity(known.model)
    if image_checks.output_inside_input(known.output_dir, known.input):
        raise SystemExit(f"segpipe segment: --output_dir {known.output_dir} lies where --input {known.input} "
                         "matches: a re-run would segment its own masks; choose an output folder outside it")
    options = {k: v for k, v in vars(known).items() if k != "input"}
    try:
        config = SegmentConfig(**dict(options, output_dir=known.output_dir.rstrip("/"), class_names=names,
                                      model_version=version))
    except ValueError as e:
        raise SystemExit(f"segpipe segment: {e}") from None
    if remove_stale_temporaries(config.output_dir):
        logging.info("removed the temporary files of an interrupted run from %s", config.output_dir)
    started = time.time()
    p = make_pipeline(beam_args, test_pipeline, save_main_session)
    build_pipeline(p, known.input, config)
    return run_and_summarize(p, "batch_segment", started, require=("images_segmented", "images_skipped"), output_dir=known.output_dir)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
