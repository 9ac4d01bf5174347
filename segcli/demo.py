"""``segpipe demo``: the demo's settings and command line (the run: ``pipelines.demo``)."""
from __future__ import annotations

import argparse
import dataclasses

DESCRIPTION = "The whole workflow on built-in data, on a laptop CPU, in minutes."


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    num_images: int = 320  # enough scenes for the tiny FCN to pass 0.85 val mean IoU
    num_holdout: int = 24  # unseen scenes for batch segmentation and the review queue
    image_size: tuple = (192, 256)  # (height, width): photo-like, not square, so padding paths run
    mosaic_size: int = 4096  # the "large GeoTIFF": 16.7 Mpx, cut into chunks and tiles by batch_segment
    epochs: int = 20  # the tiny preset's own default: ~1.5 minutes of training on 2 cores
    val_fraction: float = 0.1  # ~30 scenes: enough for a stable validation mean IoU
    tile_size: int = 512  # batch segmentation's default, so the demo runs what users run
    seed: int = 2026  # the world, the split and the training are the same on every run
    loop_pool: int = 96  # unlabeled scenes the labeling loop's model segments and reviews
    loop_count: int = 12  # scenes "corrected" per arm: a small batch, where the choice matters
    loop_epochs: int = 5  # fine-tuning epochs per arm (a quarter of the first training)


QUICK = dict(num_images=24, num_holdout=3, mosaic_size=512, epochs=1, loop_pool=6, loop_count=2, loop_epochs=1)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe demo", description=DESCRIPTION)
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every stage (seconds, not minutes)")
    for field in dataclasses.fields(DemoConfig):
        if field.type in ("int", "float"):
            parser.add_argument(f"--{field.name}", type=int if field.type == "int" else float, default=None)
    return parser


def config_from_args(args) -> DemoConfig:
    values = dict(QUICK) if args.quick else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
                   if getattr(args, f.name, None) is not None})
    return DemoConfig(**values)
