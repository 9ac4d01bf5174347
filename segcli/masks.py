"""``segpipe dataset masks``: the image+mask pair converter's command line (the job: ``pipelines.masks_to_tfrecord``)."""
from __future__ import annotations

import argparse

DESCRIPTION = "Image + label-mask pairs (KITTI road, satellite label rasters) -> sharded segmentation TFRecords."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segpipe dataset masks", description=DESCRIPTION,
        epilog="Flags not listed here go to Beam.")
    parser.add_argument("--images", required=True, help="glob of images (local or gs://)")
    parser.add_argument("--masks", required=True, help="glob of label masks (PNG)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mask_colors", required=True, help="COLORS.json: mask color -> class index; or a labelmap.txt "
                        "(Pascal VOC / CVAT Segmentation mask 1.1 export)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num_shards", type=int, default=0, help="0 (default): about 128 MB per shard")
    parser.add_argument("--image_key_regex", default=r"^(?P<key>.+)$", help="pairing rule for image stems")
    parser.add_argument("--mask_key_regex", default=r"^(?P<key>.+)$", help="pairing rule for mask stems")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in --output_dir (as a whole, once the new one is complete)")
    return parser
