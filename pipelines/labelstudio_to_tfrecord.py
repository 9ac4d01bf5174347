"""People's corrections in Label Studio -> a TFRecord dataset, by the COCO job's mask rules.

    segpipe dataset labelstudio --export export.json --images DIR --classes labeling_config.xml \\
        --output_dir OUT [--split train] [--val_fraction 0.1] [Beam options]

The export (Label Studio's "JSON" export: tasks with their annotations) is turned into a COCO
instances document (segformat.label_studio.export_to_coco: brush regions as RLE, polygons from
percent to pixels, the latest non-cancelled annotation of each task), kept as
``OUT/labelstudio_coco.json``, and converted by the COCO job's builder
(``pipelines.dataset.coco.build_records``: overlaps, validation, shards, manifest and errors
as there) in the same pipeline, so it runs on Dataflow and builds as a template like the others.
A class table whose first class is not ``background`` (CamVid's starts with sky) has every
class drawn as a label, and the pixels no region covers become 255 (void), not class 0.
Tasks people skipped or never annotated (and tasks with unknown labels, malformed regions or a
duplicate image) are not used: each is an error record in ``OUT/errors.jsonl`` (source
``EXPORT#task=ID``), counted in ``stats.json`` (``tasks_unused`` by reason) and listed in
``OUT/labelstudio_unused.json``, never written as an all-background mask.
"""
from __future__ import annotations

import json
import logging
import sys
import xml.etree.ElementTree as ET

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.dataset.job import checked_config, run_dataset_job
from pipelines.dataset.writer import WriteSegmentationDataset
from pipelines.common.runner import error_record
from pipelines.common.storage import write_json
from segcli.coco import CocoConfig
from segcli.labelstudio import make_parser
from segformat.label_studio import category_indices, export_to_coco, image_file_name


def read_class_names(path: str) -> list:
    """Background first, then the labels: from a labeling_config.xml or a classes.json."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode()
    if path.endswith(".xml"):
        labels = [label.get("value") for label in ET.fromstring(text).iter("Label")]
        return ["background"] + [name for name in labels if name != "background"]
    classes = sorted(json.loads(text)["classes"], key=lambda c: c["index"])
    return [c["name"] for c in classes]



CONVERTED = "labelstudio_coco.json"  # OUT/: the export as the COCO document the dataset is made from


def unused_task_records(export: str, unused: list) -> list:
    """An error record for each task not used: source EXPORT#task=ID, the reason, its detail."""
    return [error_record(f"{export}#task={task}", reason.split(":")[0], reason) for task, reason in unused]


def classes_table(class_names) -> dict:
    """The model's own class table in classes.json's form: its names, each category of the
    converted document -> its index (255 for "unlabeled", in a table without a background)."""
    indices = category_indices(class_names)
    entries = [{"index": index, "name": class_names[index] if index < len(class_names) else "unlabeled",
                "coco_id": category} for category, index in indices.items()]
    if 0 not in indices.values():
        entries.append({"index": 0, "name": class_names[0]})
    return {"classes": entries}


def build_pipeline(p, annotations: str, export: str, unused: list, config: CocoConfig, class_names,
                   output_dir: str, num_shards: int = 0, description=None):
    """The COCO job's records from the converted document, with the unused tasks among the
    errors and stats, written as one dataset (nothing is added after its commit)."""
    from pipelines.dataset.coco import build_records
    built = build_records(p, annotations, config, classes_table(class_names))
    records = unused_task_records(export, unused)
    by_reason = {}
    for record in records:
        by_reason[f"tasks_unused/{record['reason']}"] = by_reason.get(f"tasks_unused/{record['reason']}", 0) + 1
    errors = (built["errors"], p | "UnusedTasks" >> beam.Create(records)) | "WithUnusedTasks" >> beam.Flatten()
    stats = (built["stats"], p | "UnusedTaskCounts" >> beam.Create([by_reason])) | "WithUnusedCounts" >> beam.Flatten()
    return (dict(built, errors=errors, stats=stats)
            | WriteSegmentationDataset(output_dir, num_shards, description=description))


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    with FileSystems.open(known.export) as handle:
        items = json.loads(handle.read())
    if not isinstance(items, list):
        raise SystemExit(f"segpipe dataset labelstudio: {known.export} is not a Label Studio JSON export (a list of tasks)")
    config = checked_config("segpipe dataset labelstudio", lambda: CocoConfig(
        images_root=known.images, split=known.split, val_fraction=known.val_fraction))
    class_names = read_class_names(known.classes)
    coco, unused = export_to_coco(items, class_names, image_file_name)
    out = known.output_dir.rstrip("/")

    def stage_converted():
        # Written before the job runs, beside the dataset, where every worker (and a Dataflow
        # template run later) reads it through Beam's filesystems.
        write_json(f"{out}/{CONVERTED}", coco)
        write_json(f"{out}/labelstudio_unused.json", [{"task": task, "reason": reason} for task, reason in unused])

    result = run_dataset_job(
        "labelstudio_to_tfrecord", "segpipe dataset labelstudio", vars(known), beam_args, output_dir=known.output_dir,
        inputs=(f"{known.images.rstrip('/')}/*",), split=known.split, overwrite=known.overwrite,
        before_run=stage_converted,
        build=lambda p, description: build_pipeline(p, f"{out}/{CONVERTED}", known.export, unused, config,
                                                    class_names, known.output_dir, known.num_shards,
                                                    description=description),
        test_pipeline=test_pipeline, save_main_session=save_main_session)
    print(f"segpipe dataset labelstudio: {len(coco['images'])} tasks converted, {len(unused)} not used "
          f"(labelstudio_unused.json)", file=sys.stderr)
    return result

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
