"""The dataset side of the conversion jobs: the base DoFn that converts files read ahead, the
record references that go through the shard shuffle, the shard writer, stats.json and friends."""
from __future__ import annotations

import collections
import logging
import json
import math
import typing
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common.runner import ERRORS, STATS, Progress, count, error_record
from pipelines.common.storage import ReadAhead, commit_temp, temp_name, write_json, writing
from pipelines.dataset.commit import STAGING, commit_dataset
from segformat.records import MANIFEST
from segformat.masks import IGNORE_INDEX, fallback_class_name

LOG = logging.getLogger(__name__)

# ~128 MB per shard: large enough that GCS and tf.data read efficiently (the TFRecord guide
# suggests 100-200 MB), small enough for many shards to spread over Dataflow workers and
# tf.data's parallel interleave.
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024


def reject_image(source: str, reason: str, detail: str = "", **extra):
    """The outputs for an image that is not written: its error record and its counts."""
    count("images_rejected")
    count(f"images_rejected/{reason}")
    yield beam.pvalue.TaggedOutput(ERRORS, error_record(source, reason, detail, **extra))
    yield beam.pvalue.TaggedOutput(STATS, {"images_rejected": 1, f"images_rejected/{reason}": 1})


class ConvertFilesFn(beam.DoFn):
    """Base of the per-image conversion DoFns (COCO images, image+mask pairs).

    Each takes a batch of grouped elements (BatchElements), locates every element's files, reads
    all of the batch's files concurrently (ReadAhead) and then converts the elements in turn, so
    one slow or missing file costs a thread, not the worker. Subclasses define
    ``locate(element) -> (item, paths or None, outputs of an early rejection)`` and
    ``convert(item, paths, reads, *side_inputs)``, where each read is read_file's (bytes, error);
    their ``process`` calls ``convert_batch``.
    """
    progress_label = "conversions"

    def setup(self):
        self.progress = Progress(self.progress_label)
        self.reader = ReadAhead()

    def convert_batch(self, batch, *side_inputs):
        located = [self.locate(element) for element in batch]
        self.progress.tick(len(located))
        reads = self.reader.read(path for _, paths, _ in located if paths for path in paths)
        for item, paths, rejected in located:
            yield from rejected
            if paths:
                yield from self.convert(item, paths, [next(reads) for _ in paths], *side_inputs)


def pixel_stats(class_counts) -> dict:
    """stats.json's ``pixels/<value>`` entries from a mask's per-value pixel counts."""
    return {f"pixels/{value}": int(pixels) for value, pixels in enumerate(class_counts) if pixels}


class SumCountersFn(beam.CombineFn):
    """Sums flat {name: int} dicts: the per-image statistics deltas."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, delta):
        acc.update(delta)
        return acc

    def merge_accumulators(self, accs):
        total = collections.Counter()
        for acc in accs:
            total.update(acc)
        return total

    def extract_output(self, acc):
        return dict(acc)


def stats_document(counters: dict, class_names, extra=None) -> dict:
    """Flat counters (``images_written/train``, ``annotations_skipped/<reason>``, ``pixels/<i>``, ...)
    -> the stats.json document."""
    def group(prefix):
        return {k.split("/", 1)[1]: v for k, v in sorted(counters.items()) if k.startswith(prefix + "/")}

    pixels = group("pixels")
    per_class = {}
    for index_str, value in sorted(pixels.items(), key=lambda kv: int(kv[0])):
        index = int(index_str)
        name = "ignore" if index == IGNORE_INDEX else (class_names[index] if index < len(class_names) else fallback_class_name(index))
        per_class[name] = value
    doc = {
        "images_written": counters.get("images_written", 0),
        "images_written_by_split": group("images_written"),
        "images_rejected": counters.get("images_rejected", 0),
        "images_rejected_by_reason": group("images_rejected"),
        "annotations_used": counters.get("annotations_used", 0),
        "annotations_skipped": group("annotations_skipped"),
        # annotation-file sections whose streaming pass broke off (malformed or truncated JSON)
        "annotation_file_errors": group("annotation_file_errors"),
        "pixels_per_class": per_class,
    }
    if group("chips_skipped"):  # segpipe dataset raster: chips left out by --max_nodata / --min_labelled
        doc["chips_skipped"] = group("chips_skipped")
    if group("tasks_unused"):  # segpipe dataset labelstudio: tasks not used, by reason
        doc["tasks_unused"] = group("tasks_unused")
    doc.update(extra or {})
    return doc


class RecordRef(typing.NamedTuple):
    """A checked image and its encoded mask, without the image's bytes.

    The shuffle that groups records into shards moves only this (a few KB); the shard writer
    reads the image file again (a page-cache hit locally, a parallel GCS read on Dataflow) and
    checks its CRC, instead of the whole dataset (18 GB for COCO train) going through the shuffle.
    """
    path: str
    crc32: int
    size: int
    fmt: str
    height: int
    width: int
    filename: str
    source_id: str
    mask_png: bytes
    extra: tuple = ()  # more (key, text) features of the record (a raster chip's image/geo/* keys)

    @classmethod
    def of(cls, path: str, data: bytes, *, fmt: str, height: int, width: int, filename: str, source_id: str,
           mask_png: bytes, extra=()) -> "RecordRef":
        """The reference to the image file ``path`` whose bytes ``data`` were read and checked."""
        return cls(path=path, crc32=zlib.crc32(data), size=len(data), fmt=fmt, height=height, width=width,
                   filename=filename, source_id=source_id, mask_png=mask_png, extra=tuple(extra))

    @property
    def record_bytes(self) -> int:
        return self.size + len(self.mask_png) + len(self.filename) + 200


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


class WriteShardFn(beam.DoFn):
    """Writes one shard ((split, index, total), [(source_id, RecordRef), ...]) atomically into
    the staging folder, reading each image's bytes and checking them against the CRC taken when it
    was validated; yields the shard's manifest entry (file, split, examples, bytes, crc32c)."""

    def __init__(self, staging_dir: str):
        self.output_dir = staging_dir

    def setup(self):
        self.reader = ReadAhead()

    def process(self, element):
        import google_crc32c

        from segformat.records import build_example, frame_record
        (split, index, total), refs = element
        path = FileSystems.join(self.output_dir, shard_name(split, index, total))
        temp = temp_name(path)
        # Sorted by source id: the same inputs give byte-identical shards on every run.
        refs = [ref for _, ref in sorted((r for r in refs if r is not None), key=lambda r: r[0])]
        checksum, size, examples = google_crc32c.Checksum(), 0, 0
        with writing(path, temp), FileSystems.create(temp) as handle:
            for ref, (data, error) in zip(refs, self.reader.read(ref.path for ref in refs)):
                detail = "the file changed between validation and writing"
                if error is not None:  # deleted during the job
                    detail = f"the file can no longer be read: {error}"[:300]
                if data is None or len(data) != ref.size or zlib.crc32(data) != ref.crc32:
                    count("images_rejected/changed_during_job")
                    yield beam.pvalue.TaggedOutput(ERRORS, error_record(ref.path, "changed_during_job", detail))
                    continue
                framed = frame_record(build_example(
                    data, ref.fmt, ref.height, ref.width, ref.filename, ref.source_id, ref.mask_png, ref.extra))
                handle.write(framed)
                checksum.update(framed)
                size += len(framed)
                examples += 1
        commit_temp(temp, path)
        count("shards_written")
        yield {"file": shard_name(split, index, total), "split": split, "examples": examples, "bytes": size,
               "crc32c": checksum.hexdigest().decode()}


def _shard_count(total_bytes: int, num_shards: int, shard_bytes: int) -> int:
    if num_shards:
        return num_shards
    return max(1, math.ceil(total_bytes / shard_bytes))


def _assign_shard(element, shard_counts):
    split, source_id, record = element
    total = shard_counts[split]
    # A stable hash of the id (Python's hash() is salted per process).
    index = zlib.crc32(str(source_id).encode()) % total
    return (split, index, total), (str(source_id), record)


def _all_shard_keys(split_total):
    split, total = split_total
    return [((split, i, total), None) for i in range(total)]


def dataset_file_names(split: str = "train") -> tuple:
    """Names a dataset job writes in OUT: a shard of ``split`` and of val, and the side files."""
    return (f"{split}-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord", "errors.jsonl", "stats.json",
            "classes.json", MANIFEST)


def refuse_output_among_inputs(job: str, output_dir: str, patterns, split: str = "train") -> None:
    """Stops a dataset job whose output files would match one of its input globs (a re-run would
    read its own outputs as inputs); one rule for every dataset job. A job that reads files by
    name from a folder passes ``FOLDER/*``: the output folder must not be that folder."""
    from pipelines.common import images as image_checks
    for pattern in patterns:
        if image_checks.output_inside_input(output_dir, pattern, dataset_file_names(split)):
            raise SystemExit(f"{job}: --output_dir {output_dir} lies where {pattern} matches; "
                             "choose an output folder outside the inputs")


def _write_side_file(output_dir: str, name: str, doc) -> str:
    """Writes OUT/name as JSON and returns the name (the commit step waits for it)."""
    write_json(FileSystems.join(output_dir, name), doc)
    return name


class WriteSegmentationDataset(beam.PTransform):
    """Writes the dataset side of a conversion job.

    Inputs (a dict of PCollections):
      ``records``: (split, source_id, RecordRef);
      ``errors``: error dicts (one per rejected input);
      ``stats``: flat counter dicts, summed into stats.json;
      ``classes``: a single classes.json document.
    Writes ``<split>-SSSSS-of-NNNNN.tfrecord`` shards of about ``shard_bytes`` each (or exactly
    ``num_shards`` per split) into ``OUT/.staging``, ``errors.jsonl``, ``stats.json`` and
    ``classes.json``; then moves the shards into ``OUT``, removes any other shard there and writes
    ``dataset.json`` (docs/datasets.md), the manifest training reads. ``description``: what the
    manifest says about how the dataset was made (the command, its options).
    """

    def __init__(self, output_dir: str, num_shards: int = 0, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 description: dict | None = None):
        super().__init__()
        self.output_dir = output_dir
        self.num_shards = num_shards
        self.shard_bytes = shard_bytes
        self.description = description or {}

    def expand(self, inputs):
        records, errors, stats, classes = inputs["records"], inputs["errors"], inputs["stats"], inputs["classes"]
        out = self.output_dir
        shard_counts = (
            records
            | "RecordBytes" >> beam.Map(lambda r: (r[0], r[2].record_bytes))
            | "BytesPerSplit" >> beam.CombinePerKey(sum)
            | "ShardsPerSplit" >> beam.MapTuple(
                lambda split, size: (split, _shard_count(size, self.num_shards, self.shard_bytes))))
        keyed = records | "AssignShard" >> beam.Map(_assign_shard, beam.pvalue.AsDict(shard_counts))
        # Every shard key is emitted once, so a shard that no record hashed to is still written
        # (empty) and the -of-NNNNN names stay truthful.
        empty = shard_counts | "AllShardKeys" >> beam.FlatMap(_all_shard_keys)
        shards = ((keyed, empty) | "WithEmptyShards" >> beam.Flatten()
                  | "GroupShards" >> beam.GroupByKey()
                  | "WriteShards" >> beam.ParDo(WriteShardFn(FileSystems.join(out, STAGING))).with_outputs(
                      ERRORS, main="shards"))

        errors_written = ((errors, shards[ERRORS]) | "WithWriteErrors" >> beam.Flatten()
                          | "ErrorsToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
                          | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(out, "errors"),
                                                                file_name_suffix=".jsonl", num_shards=1,
                                                                shard_name_template=""))
        totals = stats | "SumStats" >> beam.CombineGlobally(SumCountersFn())
        classes_written = classes | "WriteClasses" >> beam.Map(
            lambda doc: _write_side_file(out, "classes.json", doc))
        stats_written = totals | "WriteStats" >> beam.Map(
            lambda counters, classes_doc: _write_side_file(
                out, "stats.json", stats_document(counters, [c["name"] for c in classes_doc["classes"]])),
            beam.pvalue.AsSingleton(classes))
        side_files = ((errors_written, classes_written, stats_written) | "SideFiles" >> beam.Flatten())
        description = self.description
        _ = (records.pipeline
             | "CommitTrigger" >> beam.Create([None])
             | "CommitDataset" >> beam.Map(
                 lambda trigger, shard_list, side, classes_doc: commit_dataset(
                     trigger, shard_list, side, out, dict(description, classes=classes_doc["classes"])),
                 beam.pvalue.AsList(shards.shards), beam.pvalue.AsList(side_files),
                 beam.pvalue.AsSingleton(classes)))
        return shards.shards
