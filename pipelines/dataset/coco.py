"""COCO instances -> records: the builder of ``segpipe dataset coco`` (and of the Label Studio job,
which converts its export to a COCO document first). Streams the JSON's three sections in
parallel passes, joins each image with its annotations, checks the image and paints its mask
(segformat.masks); ``build_records`` returns what ``WriteSegmentationDataset`` writes."""
from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import images as image_checks
from pipelines.common.runner import ERRORS, STATS, count, error_record
from pipelines.common import storage
from pipelines.common.storage import READ_AHEAD
from pipelines.dataset.splits import split_for
from pipelines.dataset.writer import DEFAULT_SHARD_BYTES, ConvertFilesFn, RecordRef, WriteSegmentationDataset, \
    pixel_stats, reject_image
from segcli.coco import CocoConfig
from segformat import masks as mask_lib

LOG = logging.getLogger(__name__)
IMAGES, ANNOTATIONS, CATEGORIES = "images", "annotations", "categories"


SECTIONS = ("categories", "images", "annotations")


def stream_coco(path: str, sections=SECTIONS):
    """Yields (section, object) for the categories, images and annotations of a COCO JSON
    (or the given sections only: each is one streaming pass over the file).

    ijson's C backend streams the file, so a 450 MB train JSON is never held parsed in memory.
    Strict JSON has no NaN or Infinity, but exporters written in Python emit them; ijson stops
    there, so the rest of such a file is read with Python's json module (which accepts them,
    and lets the validation downstream reject those coordinates one annotation at a time).
    """
    import ijson
    emitted = dict.fromkeys(sections, 0)
    try:
        for section in sections:
            with storage.reading(path), FileSystems.open(path) as handle:
                for obj in ijson.items(handle, f"{section}.item", use_float=True):
                    emitted[section] += 1
                    yield section, obj
    except ijson.JSONError as e:
        LOG.warning("%s is not strict JSON (%s); reading it whole with Python's json module", path, e)
        with FileSystems.open(path) as handle:
            document = json.loads(handle.read())
        for section in sections:
            for obj in (document.get(section) or [])[emitted[section]:]:
                yield section, obj


class StreamCocoFn(beam.DoFn):
    """annotations JSON path -> images, annotations and categories as separate keyed elements,
    keeping only the fields the masks need."""

    def _malformed(self, kind, obj, error, stats_key):
        count(stats_key)
        ident = obj.get("id", "?") if isinstance(obj, dict) else "?"
        yield beam.pvalue.TaggedOutput(ERRORS, error_record(f"{kind} {ident}", stats_key.split("/")[-1],
                                                            f"missing or bad field {error}"))
        stats = {stats_key: 1}
        if kind == "image":
            stats["images_rejected"] = 1
        yield beam.pvalue.TaggedOutput(STATS, stats)

    # Annotations are emitted as (image id, [annotations]) lists, grouped within a window of this
    # many: exporters usually write an image's annotations together, and one element per image
    # instead of per annotation makes the shuffle several times cheaper.
    BUFFER = 20000

    @staticmethod
    def _flush(pending):
        for image_id, records in pending.items():
            yield beam.pvalue.TaggedOutput(ANNOTATIONS, (image_id, records))
        pending.clear()

    def process(self, element):
        path, section_name = element
        pending, held = {}, 0
        try:
            for section, obj in stream_coco(path, (section_name,)):
                if section == "categories":
                    yield beam.pvalue.TaggedOutput(CATEGORIES, {"id": obj["id"], "name": obj.get("name")})
                elif section == "images":
                    try:
                        record = {"id": obj["id"], "file_name": obj["file_name"],
                                  "height": int(obj["height"]), "width": int(obj["width"])}
                    except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: int(inf)
                        yield from self._malformed("image", obj, e, "images_rejected/malformed_image_record")
                        continue
                    yield beam.pvalue.TaggedOutput(IMAGES, (record["id"], record))
                else:
                    try:
                        record = {"id": obj["id"], "image_id": obj["image_id"], "category_id": obj["category_id"],
                                  "segmentation": obj.get("segmentation"), "iscrowd": int(obj.get("iscrowd", 0))}
                    except (KeyError, TypeError, ValueError, OverflowError) as e:
                        yield from self._malformed("annotation", obj, e, "annotations_skipped/malformed_annotation")
                        continue
                    pending.setdefault(record["image_id"], []).append(record)
                    held += 1
                    if held >= self.BUFFER:
                        yield from self._flush(pending)
                        held = 0
            yield from self._flush(pending)
        except (OSError, ValueError) as e:
            yield from self._flush(pending)  # what was read before the error still counts
            key = f"annotation_file_errors/{section_name}"
            count(key)
            yield beam.pvalue.TaggedOutput(ERRORS, error_record(path, "malformed_annotation_file", str(e)[:500],
                                                                section=section_name))
            yield beam.pvalue.TaggedOutput(STATS, {key: 1})


def annotation_instances(annotations, height, width, class_table: mask_lib.ClassTable, crowd: str):
    """Validates one image's annotations: (instances, skipped [(annotation, reason, detail, is_error)])."""
    instances, skipped = [], []
    for ann in sorted(annotations, key=lambda a: a["id"]):
        category = ann["category_id"]
        if category not in class_table.category_to_index:
            known = category in class_table.known_category_ids
            # A category the user left out of --classes is a choice, not an error.
            skipped.append((ann, "category_not_selected" if known else "unknown_category_id", "", not known))
            continue
        if ann["iscrowd"] and crowd == "drop":
            skipped.append((ann, "crowd_dropped", "", False))
            continue
        try:
            rle = mask_lib.annotation_rle(ann["segmentation"], height, width)
        except mask_lib.AnnotationError as e:
            skipped.append((ann, e.reason, e.detail, True))
            continue
        instances.append(mask_lib.Instance(ann["id"], class_table.category_to_index[category], rle,
                                           bool(ann["iscrowd"])))
    return instances, skipped


class CocoExampleFn(ConvertFilesFn):
    """Batches of (image id, {images, annotations}) -> (split, id, RecordRef) or error records."""
    progress_label = "coco_to_tfrecord images"

    def __init__(self, config: CocoConfig):
        self.config = config

    def process(self, batch, class_table):
        yield from self.convert_batch(batch, class_table)

    def locate(self, element):
        """-> ((id, image, annotations), (the image's path,) or None, outputs of a rejection)."""
        image_id, grouped = element
        images = list(grouped[IMAGES])
        annotations = [a for chunk in grouped[ANNOTATIONS] for a in chunk]
        item = (image_id, images[0] if len(images) == 1 else None, annotations)
        if not images:
            outputs = []
            for ann in annotations:
                count("annotations_skipped/unknown_image_id")
                outputs.append(beam.pvalue.TaggedOutput(ERRORS, error_record(
                    f"annotation {ann['id']}", "unknown_image_id", f"no image with id {image_id}")))
            outputs.append(beam.pvalue.TaggedOutput(STATS, {"annotations_skipped/unknown_image_id": len(annotations)}))
            return item, None, outputs
        if len(images) > 1:  # every entry of the id is rejected (and counted): which one is meant is unknowable
            return item, None, [output for image in images for output in reject_image(
                str(image.get("file_name")), "duplicate_image_id", f"{len(images)} images share id {image_id}",
                image_id=image_id)]
        try:
            return item, (image_checks.join_under_root(self.config.images_root, images[0]["file_name"]),), []
        except image_checks.ImageError as e:
            return item, None, list(reject_image(str(images[0]["file_name"]), e.reason, e.detail, image_id=image_id))

    def convert(self, item, paths, reads, class_table):
        (image_id, image, annotations), (path,), ((data, error),) = item, paths, reads
        config = self.config
        if error is not None:
            reason = "missing_image" if not FileSystems.exists(path) else "unreadable_image"
            yield from reject_image(path, reason, str(error)[:500], image_id=image_id)
            return
        try:
            fmt, height, width = image_checks.inspect_image(data, config.max_image_pixels)
        except image_checks.ImageError as e:
            yield from reject_image(path, e.reason, e.detail, image_id=image_id)
            return
        if (height, width) != (image["height"], image["width"]):
            yield from reject_image(path, "size_mismatch",
                                    f"file is {width}x{height}, JSON says {image['width']}x{image['height']}",
                                    image_id=image_id)
            return

        instances, skipped = annotation_instances(annotations, height, width, class_table, config.crowd)
        stats = {"images_written": 1, f"images_written/{split_for(image_id, config.val_fraction, config.split)}": 1,
                 "annotations_used": len(instances)}
        for ann, reason, detail, is_error in skipped:
            key = f"annotations_skipped/{reason}"
            stats[key] = stats.get(key, 0) + 1
            count(key)
            if is_error:
                yield beam.pvalue.TaggedOutput(ERRORS, error_record(
                    f"annotation {ann['id']}", reason, detail, image_id=image_id, file_name=image["file_name"]))
        mask = mask_lib.paint_class_mask(height, width, instances, config.crowd, config.overlap)
        painted = {i.class_index for i in instances} | {mask_lib.IGNORE_INDEX}
        stats.update(pixel_stats(mask_lib.class_pixel_counts(mask, painted)))
        split = split_for(image_id, config.val_fraction, config.split)
        count("images_written")
        count("annotations_used", len(instances))
        yield beam.pvalue.TaggedOutput(STATS, stats)
        yield split, str(image_id), RecordRef.of(
            path, data, fmt=fmt, height=height, width=width, filename=image["file_name"], source_id=str(image_id),
            mask_png=image_checks.encode_mask_png(mask))


def build_records(p, annotations: str, config: CocoConfig, classes_spec) -> dict:
    """A COCO instances file -> {records, errors, stats, classes}: what WriteSegmentationDataset
    writes (the Label Studio job adds its own errors and stats before writing)."""
    parsed = (p
              # One element per section: the three streaming passes over the file run on
              # different workers at once (the annotations pass is the long one).
              | "AnnotationFile" >> beam.Create([(annotations, section) for section in SECTIONS])
              | "StreamCoco" >> beam.ParDo(StreamCocoFn()).with_outputs(
                  IMAGES, ANNOTATIONS, CATEGORIES, ERRORS, STATS))
    tables = (parsed[CATEGORIES]
              | "CollectCategories" >> beam.combiners.ToList()
              | "ClassTable" >> beam.Map(mask_lib.build_class_table, classes_spec))
    converted = (
        {IMAGES: parsed[IMAGES], ANNOTATIONS: parsed[ANNOTATIONS]}
        | "GroupByImage" >> beam.CoGroupByKey()
        | "Batch" >> beam.BatchElements(min_batch_size=READ_AHEAD, max_batch_size=READ_AHEAD)
        | "BuildExamples" >> beam.ParDo(CocoExampleFn(config), beam.pvalue.AsSingleton(tables)).with_outputs(
            ERRORS, STATS, main="records"))
    errors = (parsed[ERRORS], converted[ERRORS]) | "AllErrors" >> beam.Flatten()
    stats = (parsed[STATS], converted[STATS]) | "AllStats" >> beam.Flatten()
    return {"records": converted.records, "errors": errors, "stats": stats,
            "classes": tables | "ClassesJson" >> beam.Map(lambda t: t.to_json())}


def build_pipeline(p, annotations: str, config: CocoConfig, classes_spec, output_dir: str,
                   num_shards: int = 0, shard_bytes: int = DEFAULT_SHARD_BYTES, description=None):
    return build_records(p, annotations, config, classes_spec) | WriteSegmentationDataset(
        output_dir, num_shards, shard_bytes, description)


def parse_classes(value: str):
    if value in ("all", "voc"):
        return value
    with FileSystems.open(value) as handle:
        return json.loads(handle.read())


