"""``segpipe dataset masks``: the image+mask pair converter's settings and command line (the job:
``pipelines.masks_to_tfrecord``)."""
from __future__ import annotations

import argparse
import dataclasses

from segcli.pairing import WHOLE_STEM, key_regex_problems
from segcli.splits import split_problems

DESCRIPTION = "Image + label-mask pairs (KITTI road, CamVid, CVAT exports, label rasters) -> sharded segmentation TFRecords."


@dataclasses.dataclass(frozen=True, kw_only=True)
class MasksConfig:
    images: str
    masks: str
    output_dir: str
    mask_colors: str
    # The records' split; the pairs job has no --val_fraction: a dataset that ships its splits
    # (KITTI, CamVid) is converted once per split, each into its own folder.
    split: str = "train"
    num_shards: int = 0  # 0: about 128 MB per shard
    image_key_regex: str = WHOLE_STEM  # a.jpg pairs with a.png, as most image+mask datasets name them
    mask_key_regex: str = WHOLE_STEM
    overwrite: bool = False

    def __post_init__(self):
        problems = split_problems(self.split, 0.0)
        if self.num_shards < 0:
            problems.append(f"num_shards must be 0 (automatic) or positive, got {self.num_shards}")
        problems += key_regex_problems(self, ("image_key_regex", "mask_key_regex"))
        if problems:
            raise ValueError("; ".join(problems))


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(MasksConfig)}
    parser = argparse.ArgumentParser(
        prog="segpipe dataset masks", description=DESCRIPTION,
        epilog="Flags not listed here go to Beam.")
    parser.add_argument("--images", required=True, help="glob of images (local or gs://)")
    parser.add_argument("--masks", required=True, help="glob of label masks (PNG)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mask_colors", required=True, help="COLORS.json: mask color -> class index; or a labelmap.txt "
                        "(Pascal VOC / CVAT Segmentation mask 1.1 export)")
    parser.add_argument("--split", default=defaults["split"])
    parser.add_argument("--num_shards", type=int, default=defaults["num_shards"], help="0 (default): about 128 MB per shard")
    parser.add_argument("--image_key_regex", default=defaults["image_key_regex"], help="pairing rule for image stems")
    parser.add_argument("--mask_key_regex", default=defaults["mask_key_regex"], help="pairing rule for mask stems")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in --output_dir (as a whole, once the new one is complete)")
    return parser
