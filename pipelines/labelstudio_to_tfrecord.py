"""People's corrections in Label Studio -> a TFRecord dataset, by the COCO job's mask rules.

    segpipe dataset labelstudio --export export.json --images DIR --classes labeling_config.xml \\
        --output_dir OUT [--split train] [--val_fraction 0.1] [Beam options]

The export (Label Studio's "JSON" export: tasks with their annotations) is turned into a COCO
instances document (segformat.label_studio.export_to_coco: brush regions as RLE, polygons from
percent to pixels, the latest non-cancelled annotation of each task) and converted by
``pipelines.coco_to_tfrecord`` (overlaps, validation, shards, manifest and errors as there).
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
import os
import posixpath
import sys
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET

from apache_beam.io.filesystems import FileSystems

from pipelines.storage import write_json
from segcli.labelstudio import make_parser
from segformat.label_studio import category_indices, export_to_coco


def read_class_names(path: str) -> list:
    """Background first, then the labels: from a labeling_config.xml or a classes.json."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode()
    if path.endswith(".xml"):
        labels = [label.get("value") for label in ET.fromstring(text).iter("Label")]
        return ["background"] + [name for name in labels if name != "background"]
    classes = sorted(json.loads(text)["classes"], key=lambda c: c["index"])
    return [c["name"] for c in classes]


def image_file_name(url: str) -> str:
    """A task's image URL (a local-files URL, gs://, http(s)://) -> the image's file name."""
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else parsed.path
    return posixpath.basename(urllib.parse.unquote(path))


def add_to_error_files(out: str, export: str, unused: list) -> None:
    """The tasks not used join the dataset's errors.jsonl (one record each: source
    EXPORT#task=ID, the reason, the detail) and stats.json (``tasks_unused`` by reason), so a
    skipped task is counted where every other rejected input is."""
    from pipelines.runner import error_record
    from pipelines.storage import write_atomic
    if not unused:
        return
    with FileSystems.open(f"{out}/errors.jsonl") as handle:
        existing = handle.read().decode()
    records = [error_record(f"{export}#task={task}", reason.split(":")[0], reason) for task, reason in unused]
    write_atomic(f"{out}/errors.jsonl", (existing + "".join(json.dumps(r, sort_keys=True) + "\n"
                                                            for r in records)).encode(), "application/jsonl")
    with FileSystems.open(f"{out}/stats.json") as handle:
        stats = json.loads(handle.read())
    by_reason = {}
    for record in records:
        by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1
    stats["tasks_unused"] = dict(sorted(by_reason.items()))
    write_json(f"{out}/stats.json", stats)


def run(argv=None, save_main_session=True, test_pipeline=None):
    from pipelines import coco_to_tfrecord
    known, beam_args = make_parser().parse_known_args(argv)
    with FileSystems.open(known.export) as handle:
        items = json.loads(handle.read())
    if not isinstance(items, list):
        raise SystemExit(f"segpipe dataset labelstudio: {known.export} is not a Label Studio JSON export (a list of tasks)")
    class_names = read_class_names(known.classes)
    coco, unused = export_to_coco(items, class_names, image_file_name)
    workdir = tempfile.mkdtemp(prefix="segpipe-labelstudio-")
    annotations = os.path.join(workdir, "annotations.json")
    with open(annotations, "w") as handle:
        json.dump(coco, handle)
    classes = os.path.join(workdir, "classes.json")
    with open(classes, "w") as handle:  # the model's own table: its names, categories -> its indices
        json.dump({"classes": [{"index": index, "name": class_names[index] if index < len(class_names) else "unlabeled",
                                "coco_id": category} for category, index in category_indices(class_names).items()]
                   + ([{"index": 0, "name": class_names[0]}] if 0 not in category_indices(class_names).values() else [])},
                  handle)
    try:
        result = coco_to_tfrecord.run(
            ["--annotations", annotations, "--images", known.images, "--output_dir", known.output_dir,
             "--classes", classes, "--split", known.split, "--val_fraction", str(known.val_fraction),
             "--num_shards", str(known.num_shards), *(["--overwrite"] if known.overwrite else []), *beam_args],
            save_main_session=save_main_session, test_pipeline=test_pipeline)
    finally:
        for path in (annotations, classes):
            os.remove(path)
        os.rmdir(workdir)
    out = known.output_dir.rstrip("/")
    write_json(f"{out}/labelstudio_unused.json", [{"task": task, "reason": reason} for task, reason in unused])
    add_to_error_files(out, known.export, unused)
    print(f"segpipe dataset labelstudio: {len(coco['images'])} tasks converted, {len(unused)} not used "
          f"(labelstudio_unused.json)", file=sys.stderr)
    return result


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
