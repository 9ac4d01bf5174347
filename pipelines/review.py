"""A labeling batch from the review queue of a batch segmentation (``segpipe review``).

    segpipe review --segmentation SEG_OUT --output_dir BATCH [--count 50]
        [--strategy uncertain|stratified|random] [--exclude labeled.txt] [--image_url_prefix URL]

BATCH gets:
* ``tasks.json``: Label Studio tasks, each with the model's masks as a prediction (BrushLabels
  in Label Studio's RLE, the image's mean confidence as ``score``, ``model_version``); import it
  into a project whose labeling interface is
* ``labeling_config.xml`` (one brush label per class, in the project's class colours);
* ``labels_coco.json``: the same images' machine labels as a COCO instances file (compressed RLE),
  the format CVAT imports as "COCO 1.0";
* ``cvat_segmentation_mask/``: the same masks in CVAT's "Segmentation mask 1.1" layout (Pascal
  VOC's: ``labelmap.txt`` with each class's colour, ``SegmentationClass/STEM.png`` in those
  colours, ``ImageSets/Segmentation/default.txt``), zipped by the user for CVAT's import;
* ``batch.txt``: the chosen inputs, one per line (``--exclude`` of the next round).
Only photos are batched: a GeoTIFF mask is counted as skipped (labeling tools do not open
georeferenced rasters of that size).
"""
from __future__ import annotations

import io
import json
import logging
import posixpath
import random
import sys

import numpy as np

from segcli.review import ReviewConfig, make_parser
from segformat import label_studio
from segformat.masks import background_index

LOG = logging.getLogger(__name__)


def select(records: list, config: ReviewConfig, class_names, excluded=frozenset()) -> list:
    """The records to label next (see ReviewConfig.strategy); never an excluded input."""
    pool = [r for r in records if r["input"] not in excluded and posixpath.basename(r["input"]) not in excluded
            and r.get("file_name", "") not in excluded]
    by_priority = sorted(pool, key=lambda r: (-r["review_priority"], r["input"]))
    if config.strategy == "uncertain":
        return by_priority[:config.count]
    if config.strategy == "random":
        return random.Random(config.seed).sample(sorted(pool, key=lambda r: r["input"]), min(config.count, len(pool)))
    queues = {}  # stratified: per predicted class (the background, if there is one, aside), most uncertain first
    background = {class_names[0]} if background_index(class_names) is not None else set()
    for record in by_priority:
        for name, fraction in record["class_fraction"].items():
            if fraction > 0 and name not in background:
                queues.setdefault(name, []).append(record)
    chosen, seen = [], set()
    while len(chosen) < config.count and any(queues.values()):
        for name in sorted(queues, key=lambda n: len(queues[n])):  # the rarest classes pick first
            while queues[name] and queues[name][0]["input"] in seen:
                queues[name].pop(0)
            if queues[name] and len(chosen) < config.count:
                record = queues[name].pop(0)
                seen.add(record["input"])
                chosen.append(record)
    return chosen



def write_segmentation_mask_1_1(folder: str, masks: dict, class_names, colors) -> None:
    """CVAT's "Segmentation mask 1.1" (Pascal VOC segmentation layout) of ``masks`` {stem: mask}."""
    from PIL import Image

    from pipelines.common.storage import write_atomic
    from pipelines.dataset.colors import VOC_VOID_COLOR
    lines = "".join(f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in zip(class_names, colors))
    write_atomic(f"{folder}/labelmap.txt", ("# label:color_rgb:parts:actions\n" + lines).encode(), "text/plain")
    table = np.zeros((256, 3), np.uint8)
    table[:len(class_names)] = np.asarray(colors, np.uint8)
    table[255] = VOC_VOID_COLOR
    for stem, mask in masks.items():
        buffer = io.BytesIO()
        Image.fromarray(table[mask]).save(buffer, format="PNG")
        write_atomic(f"{folder}/SegmentationClass/{stem}.png", buffer.getvalue(), "image/png")
    write_atomic(f"{folder}/ImageSets/Segmentation/default.txt", "".join(f"{s}\n" for s in masks).encode(),
                 "text/plain")


def build_batch(config: ReviewConfig) -> dict:
    from apache_beam.io.filesystems import FileSystems
    from PIL import Image

    from pipelines.common.palette import palette
    from pipelines.common.storage import write_atomic
    seg = config.segmentation.rstrip("/")
    with FileSystems.open(f"{seg}/summary.jsonl") as handle:
        records = [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]
    with FileSystems.open(f"{seg}/labels_coco.json") as handle:
        coco = json.loads(handle.read())
    version = config.model_version
    if FileSystems.exists(f"{seg}/classes.json"):
        with FileSystems.open(f"{seg}/classes.json") as handle:
            table = json.loads(handle.read())
        class_names = [c["name"] for c in sorted(table["classes"], key=lambda c: c["index"])]
        version = version or table.get("model_version", "")
    else:  # a folder segmented before classes.json was written beside the masks
        class_names = ["background"] + [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    excluded = set()
    if config.exclude:
        with FileSystems.open(config.exclude) as handle:
            excluded = {line.strip() for line in handle.read().decode().splitlines() if line.strip()}
    photos = [r for r in records if not r["mask"].endswith(".tif")]
    chosen = select(photos, config, class_names, excluded)
    tasks, masks = [], {}
    for record in chosen:
        with FileSystems.open(record["mask"]) as handle:
            mask = np.asarray(Image.open(io.BytesIO(handle.read())))
        masks[posixpath.splitext(posixpath.basename(record["input"]))[0]] = mask
        tasks.append(label_studio.task(label_studio.image_url(record["input"], config.image_url_prefix), mask, class_names,
                                       record["mean_confidence"], version or seg,
                                       meta={"review_priority": record["review_priority"]}))
    names = {posixpath.basename(r["input"]) for r in chosen} | {r.get("file_name") for r in chosen}
    images = [i for i in coco["images"] if i["file_name"] in names]
    ids = {i["id"] for i in images}
    subset = dict(coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    out = config.output_dir.rstrip("/")
    write_atomic(f"{out}/tasks.json", json.dumps(tasks).encode(), "application/json")
    write_atomic(f"{out}/labeling_config.xml",
                 label_studio.labeling_config(class_names, palette()[:len(class_names)].tolist()).encode(), "application/xml")
    write_atomic(f"{out}/labels_coco.json", json.dumps(subset).encode(), "application/json")
    write_segmentation_mask_1_1(f"{out}/cvat_segmentation_mask", masks, class_names,
                                palette()[:len(class_names)].tolist())
    write_atomic(f"{out}/batch.txt", "".join(r["input"] + "\n" for r in chosen).encode(), "text/plain")
    summary = {"chosen": len(chosen), "candidates": len(photos) - len(excluded & {r["input"] for r in photos}),
               "rasters_skipped": len(records) - len(photos), "strategy": config.strategy}
    print(f"segpipe review: {summary['chosen']} images ({config.strategy}) -> {out}/tasks.json, labeling_config.xml, "
          f"labels_coco.json, cvat_segmentation_mask/, batch.txt; {summary['rasters_skipped']} GeoTIFF masks skipped")
    return summary


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        config = ReviewConfig(**vars(args))
    except ValueError as e:
        raise SystemExit(f"segpipe review: {e}") from None
    return build_batch(config)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
