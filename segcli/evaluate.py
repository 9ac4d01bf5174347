"""``segpipe evaluate``: the evaluation's command line (the scoring: ``segmodel.evaluate``)."""
from __future__ import annotations

import argparse

from segcli import tta

DESCRIPTION = "Score an exported model on segmentation TFRecords at full image size (no resize, no crop)."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe evaluate", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="MODEL dir (or a .keras file)")
    parser.add_argument("--data", required=True, help="a dataset folder or a glob of TFRecord shards")
    parser.add_argument("--split", default="val", help="the split of a dataset folder to score")
    parser.add_argument("--output", default="metrics.json")
    parser.add_argument("--positive_class", default=None,
                        help="class scored as the KITTI road benchmark scores road (MaxF, AP, precision, recall, "
                             "FPR, FNR); automatic for a two-class model")
    tta.add_arguments(parser)
    return parser
