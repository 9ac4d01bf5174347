"""``segpipe dataset labelstudio``: corrected labels exported from Label Studio -> TFRecords (the job:
``pipelines.labelstudio_to_tfrecord``)."""
from __future__ import annotations

import argparse

DESCRIPTION = "A Label Studio JSON export (brush masks and polygons) -> sharded segmentation TFRecords."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe dataset labelstudio", description=DESCRIPTION,
                                     epilog="Flags not listed here go to Beam (--runner, --project, ...).")
    parser.add_argument("--export", required=True, help="Label Studio's JSON export (local or gs://)")
    parser.add_argument("--images", required=True, help="folder holding the tasks' images, found by file name")
    parser.add_argument("--classes", required=True, help="the class table: a model's classes.json, or the "
                        "labeling_config.xml segpipe review wrote (background first, then its labels)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--val_fraction", type=float, default=0.0)
    parser.add_argument("--num_shards", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    return parser
