"""``segpipe dataset coco``: the COCO converter's settings and command line (the job: ``pipelines.coco_to_tfrecord``)."""
from __future__ import annotations

import argparse
import dataclasses

from segformat.limits import DEFAULT_MAX_PIXELS
from segcli.splits import split_problems
from segformat.masks import CROWD_MODES, OVERLAP_MODES

DESCRIPTION = "COCO instance annotations + images -> sharded segmentation TFRecords."


@dataclasses.dataclass(frozen=True, kw_only=True)
class CocoConfig:
    images_root: str
    # docs/datasets.md defaults: crowds become "ignore" so the model is never taught that a crowd of
    # people is background, nor that it is one clean instance.
    crowd: str = "ignore"
    # Small objects on top, as in COCO-Stuff and most semantic conversions; "ignore" reproduces
    # torchvision's reference recipe (overlaps are unlabelled).
    overlap: str = "smaller_on_top"
    split: str = "train"
    # 0: no validation split; a user holding out part of a single JSON sets e.g. 0.05.
    val_fraction: float = 0.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        problems = []
        if self.crowd not in CROWD_MODES:
            problems.append(f"crowd must be one of {CROWD_MODES}, got {self.crowd!r}")
        if self.overlap not in OVERLAP_MODES:
            problems.append(f"overlap must be one of {OVERLAP_MODES}, got {self.overlap!r}")
        problems += split_problems(self.split, self.val_fraction)
        if self.max_image_pixels < 1:
            problems.append(f"max_image_pixels must be positive, got {self.max_image_pixels}")
        if problems:
            raise ValueError("; ".join(problems))


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(CocoConfig)}
    parser = argparse.ArgumentParser(
        prog="segpipe dataset coco", description=DESCRIPTION,
        epilog="Flags not listed here go to Beam (e.g. --runner DataflowRunner --project P --region R "
               "--temp_location gs://B/tmp --setup_file ./setup.py).")
    parser.add_argument("--annotations", required=True, help="COCO instances JSON (local path or gs://)")
    parser.add_argument("--images", required=True, help="folder the JSON's file_name values are relative to")
    parser.add_argument("--output_dir", required=True, help="where shards, classes.json, stats.json go")
    parser.add_argument("--classes", default="all", help="all | voc | CLASSES.json (category id or name -> index, or a classes.json table with coco_id per class)")
    parser.add_argument("--split", default=defaults["split"], help="name of the main split (shard file prefix)")
    parser.add_argument("--val_fraction", type=float, default=defaults["val_fraction"],
                        help="fraction of images (by a hash of the id) written as val-*.tfrecord")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="shards per split; 0 (default): about 128 MB per shard")
    parser.add_argument("--crowd", choices=CROWD_MODES, default=defaults["crowd"])
    parser.add_argument("--overlap", choices=OVERLAP_MODES, default=defaults["overlap"])
    parser.add_argument("--max_image_pixels", type=int, default=defaults["max_image_pixels"],
                        help="larger images are rejected as decompression bombs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in --output_dir (as a whole, once the new one is complete)")
    return parser
