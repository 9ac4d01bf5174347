"""The whole workflow on built-in data, on a laptop CPU, in minutes:

    generate a procedural aerial world (COCO JSON + JPEGs, and a 4096x4096 GeoTIFF mosaic)
    -> coco_to_tfrecord (train + val split) -> segmodel.train (tiny configuration)
    -> segmodel.evaluate -> batch_segment (held-back scenes and the GeoTIFF) -> report

    python -m pipelines.demo --output_dir demo_output [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time


@dataclasses.dataclass
class DemoConfig:
    num_images: int = 320  # enough scenes for the tiny FCN to pass 0.85 val mean IoU
    num_holdout: int = 24  # unseen scenes for batch segmentation and the review queue
    image_size: tuple = (192, 256)
    mosaic_size: int = 4096  # the contract's "large GeoTIFF": 16.7 Mpx, tiled by batch_segment
    epochs: int = 20
    val_fraction: float = 0.1
    tile_size: int = 512
    seed: int = 2026


QUICK = dict(num_images=24, num_holdout=3, mosaic_size=512, epochs=1)


def _stage(name: str):
    print(f"\n=== {name} ===", flush=True)
    return time.time()


def run_demo(output_dir: str, config: DemoConfig) -> dict:
    from pipelines import batch_segment, coco_to_tfrecord, demo_data, report
    from segmodel import evaluate, train

    started = time.time()
    out = os.path.abspath(output_dir)
    world, holdout = f"{out}/world", f"{out}/holdout"
    t = _stage("1/6 generating the demo world")
    annotations = demo_data.write_coco_dataset(world, config.num_images, config.image_size, config.seed)
    demo_data.write_coco_dataset(holdout, config.num_holdout, config.image_size, config.seed,
                                 first_id=config.num_images + 1)
    demo_data.write_geotiff_mosaic(f"{holdout}/images/mosaic.tif", config.mosaic_size, seed=config.seed)
    print(f"{config.num_images} scenes + {config.num_holdout} held back + a {config.mosaic_size}^2 GeoTIFF "
          f"({time.time() - t:.0f}s)")

    _stage("2/6 dataset: coco_to_tfrecord")
    coco_to_tfrecord.run(["--annotations", annotations, "--images", f"{world}/images", "--output_dir",
                          f"{out}/dataset", "--val_fraction", str(config.val_fraction), "--overwrite"])

    _stage("3/6 training (tiny FCN-8s on the CPU)")
    history = train.main(["--progress", "2", "--train_data", f"{out}/dataset/train-*.tfrecord", "--val_data",
                          f"{out}/dataset/val-*.tfrecord", "--model_dir", f"{out}/model", "--config", "tiny",
                          "--epochs", str(config.epochs), "--image_size", "128"])

    _stage("4/6 evaluation")
    metrics = evaluate.main(["--model", f"{out}/model", "--data", f"{out}/dataset/val-*.tfrecord",
                             "--output", f"{out}/metrics.json"])

    _stage("5/6 batch segmentation of held-back scenes and the GeoTIFF")
    batch_segment.run(["--model", f"{out}/model", "--input", f"{holdout}/images/*", "--output_dir",
                       f"{out}/segmentation", "--tile_size", str(config.tile_size), "--overlays"])

    _stage("6/6 report")
    page = report.build_report(f"{out}/report", f"{out}/dataset", f"{out}/model", f"{out}/metrics.json",
                               f"{out}/segmentation", f"{out}/dataset/val-*.tfrecord", title="segpipe demo")
    print(f"\nvalidation mean IoU: {metrics['mean_iou']:.3f} (pixel accuracy {metrics['pixel_accuracy']:.3f}); "
          f"demo took {time.time() - started:.0f}s")
    print(f"report: {page}")
    return {"metrics": metrics, "history": history, "report": page}


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every stage (seconds, not minutes)")
    for field in dataclasses.fields(DemoConfig):
        if field.type in ("int", "float"):
            parser.add_argument(f"--{field.name}", type=int if field.type == "int" else float, default=None)
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
                   if getattr(args, f.name, None) is not None})
    return run_demo(args.output_dir, DemoConfig(**values))


if __name__ == "__main__":
    main(sys.argv[1:])
