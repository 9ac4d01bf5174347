"""``segpipe report``: the report's command line (the page: ``pipelines.report``)."""
from __future__ import annotations

import argparse

DESCRIPTION = "A static HTML report of a dataset, a model, its metrics and a batch segmentation run."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe report", description=DESCRIPTION)
    parser.add_argument("--output", required=True, help="folder for index.html and its pictures")
    parser.add_argument("--dataset", default="", help="dataset folder with stats.json")
    parser.add_argument("--model", default="", help="MODEL folder (history.csv, classes.json, model.keras)")
    parser.add_argument("--metrics", default="", help="metrics.json from segmodel.evaluate")
    parser.add_argument("--segmentation", default="", help="batch_segment output folder")
    parser.add_argument("--data", default="", help="TFRecords to draw validation samples from")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--loop", default="", help="loop.json of a labeling-loop round (pipelines.labeling.loop)")
    return parser
