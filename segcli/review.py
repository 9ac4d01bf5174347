"""``segpipe review``: a labeling batch from a batch segmentation's review queue (the batch:
``pipelines.review``)."""
from __future__ import annotations

import argparse
import dataclasses

DESCRIPTION = "Pick the images people should correct next and write them as a labeling tool's import batch."
STRATEGIES = ("uncertain", "stratified", "random")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReviewConfig:
    segmentation: str
    output_dir: str
    # A batch a person corrects in an afternoon; labeling tools page tasks 50-100 at a time.
    count: int = 50
    # uncertain: the highest review_priority first (most to learn per image); stratified: the most
    # uncertain image of each predicted class in turn, so rare classes are reviewed too; random:
    # the baseline any active-learning choice should beat.
    strategy: str = "uncertain"
    exclude: str = ""
    image_url_prefix: str = ""
    model_version: str = ""
    seed: int = 0

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(ReviewConfig)}
    parser = argparse.ArgumentParser(prog="segpipe review", description=DESCRIPTION)
    parser.add_argument("--segmentation", required=True, help="a segpipe segment output folder (summary.jsonl, masks/)")
    parser.add_argument("--output_dir", required=True, help="where the batch goes (local or gs://)")
    parser.add_argument("--count", type=int, default=defaults["count"], help="images in the batch")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults["strategy"])
    parser.add_argument("--exclude", default="", help="a file of input paths or file names already labeled "
                        "(one per line; a previous batch's batch.txt)")
    parser.add_argument("--image_url_prefix", default="", help="image URL = prefix + the input's file name; by "
                        "default gs:// inputs keep their URI and local ones become Label Studio local-file URLs")
    parser.add_argument("--model_version", default="", help="shown by Label Studio beside the predictions")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="for --strategy random")
    return parser
