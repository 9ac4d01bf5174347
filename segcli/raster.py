"""``segpipe dataset raster``: the raster chip converter's settings and command line (the job:
``pipelines.raster_to_tfrecord``)."""
from __future__ import annotations

import argparse
import dataclasses

from segcli.pairing import WHOLE_STEM, key_regex_problems
from segcli.splits import split_problems

DESCRIPTION = "GeoTIFF scenes + label rasters -> chips -> sharded segmentation TFRecords."


@dataclasses.dataclass(frozen=True, kw_only=True)
class RasterConfig:
    scenes: str
    mask_colors: str
    output_dir: str
    # Labels: label rasters on the scenes' grids (a glob), or vector labels (a GeoJSON file whose
    # features carry the class in ``class_attribute``), rasterized in each scene's CRS.
    labels: str = ""
    vectors: str = ""
    class_attribute: str = "class"
    # The training crop and batch segmentation's tile: chips the model sees whole.
    chip_size: int = 512
    # No overlap by default: every pixel in one chip; a smaller stride adds overlapping chips.
    stride: int = 512
    bands: str | None = None
    # A chip mostly outside the scene's data (its collar, clouds masked as nodata) teaches little.
    max_nodata: float = 0.5
    # 0 keeps chips that are all background; building footprints over a rural scene may want
    # e.g. 0.01, so that chips without a single labelled object are skipped (and counted).
    min_labelled: float = 0.0
    split: str = "train"
    val_fraction: float = 0.0
    num_shards: int = 0
    scene_key_regex: str = WHOLE_STEM  # a scene pairs with the label raster of the same file stem
    label_key_regex: str = WHOLE_STEM
    overwrite: bool = False

    def __post_init__(self):
        problems = []
        if bool(self.labels) == bool(self.vectors):
            problems.append("give label rasters (--labels) or vector labels (--vectors), one of the two")
        if self.chip_size < 32:
            problems.append(f"chip_size must be at least 32, got {self.chip_size}")
        if self.stride < 1:
            problems.append(f"stride must be positive, got {self.stride}")
        if not 0.0 <= self.max_nodata <= 1.0:
            problems.append(f"max_nodata must be in [0, 1], got {self.max_nodata}")
        if not 0.0 <= self.min_labelled <= 1.0:
            problems.append(f"min_labelled must be in [0, 1], got {self.min_labelled}")
        problems += split_problems(self.split, self.val_fraction)
        problems += key_regex_problems(self, ("scene_key_regex", "label_key_regex"))
        if problems:
            raise ValueError("; ".join(problems))


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(RasterConfig)}
    parser = argparse.ArgumentParser(prog="segpipe dataset raster", description=DESCRIPTION,
                                     epilog="Flags not listed here go to Beam (--runner, --project, ...).")
    parser.add_argument("--scenes", required=True, help="glob of GeoTIFF scenes (local or gs://)")
    parser.add_argument("--labels", default="", help="glob of label rasters on the scenes' grids")
    parser.add_argument("--vectors", default="", help="or: a GeoJSON file of labelled polygons (any CRS; "
                        "RFC 7946 WGS84 unless it names another), rasterized in each scene's CRS")
    parser.add_argument("--class_attribute", default=defaults["class_attribute"],
                        help="the feature property holding the class: a value COLORS.json maps, or a class name")
    parser.add_argument("--mask_colors", required=True, help="COLORS.json: label value or colour -> class index")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--chip_size", type=int, default=defaults["chip_size"])
    parser.add_argument("--stride", type=int, default=defaults["stride"])
    parser.add_argument("--bands", default=defaults["bands"], help="scene bands as RGB, 1-based, e.g. 4,3,2")
    parser.add_argument("--max_nodata", type=float, default=defaults["max_nodata"],
                        help="chips with a larger share of nodata (255) pixels are skipped and counted")
    parser.add_argument("--min_labelled", type=float, default=defaults["min_labelled"],
                        help="chips with a smaller share of pixels of a class other than background (0) are "
                             "skipped and counted")
    parser.add_argument("--split", default=defaults["split"])
    parser.add_argument("--val_fraction", type=float, default=defaults["val_fraction"])
    parser.add_argument("--num_shards", type=int, default=defaults["num_shards"])
    parser.add_argument("--scene_key_regex", default=defaults["scene_key_regex"])
    parser.add_argument("--label_key_regex", default=defaults["label_key_regex"])
    parser.add_argument("--overwrite", action="store_true")
    return parser
