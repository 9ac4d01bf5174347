"""The whole workflow on built-in data, on a laptop CPU, in minutes:

    generate a procedural aerial world (COCO JSON + JPEGs, and a 4096x4096 GeoTIFF mosaic)
    -> coco_to_tfrecord (train + val split) -> segmodel.train (tiny configuration)
    -> segmodel.evaluate -> batch_segment (held-back scenes and the GeoTIFF)
    -> segpipe dataset raster (the GeoTIFF and its label raster as chips) -> evaluate on them
    -> one round of the labeling loop (pipelines.labeling.loop) -> report

    python -m pipelines.demo --output_dir demo_output [--quick]
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from segcli.demo import DemoConfig, config_from_args, make_parser


def _stage(name: str):
    print(f"\n=== {name} ===", flush=True)
    return time.time()


def run_demo(output_dir: str, config: DemoConfig) -> dict:
    from pipelines import batch_segment, coco_to_tfrecord, report
    from pipelines.demo_world import scenes as demo_data
    from segmodel import evaluate, train

    started = time.time()
    out = os.path.abspath(output_dir)
    world, holdout = f"{out}/world", f"{out}/holdout"
    t = _stage("1/8 generating the demo world")
    annotations = demo_data.write_coco_dataset(world, config.num_images, config.image_size, config.seed)
    demo_data.write_coco_dataset(holdout, config.num_holdout, config.image_size, config.seed,
                                 first_id=config.num_images + 1)
    os.makedirs(f"{out}/raster_labels", exist_ok=True)
    demo_data.write_geotiff_mosaic(f"{holdout}/images/mosaic.tif", config.mosaic_size, seed=config.seed,
                                   labels_path=f"{out}/raster_labels/mosaic.tif")
    print(f"{config.num_images} scenes + {config.num_holdout} held back + a {config.mosaic_size}^2 GeoTIFF "
          f"({time.time() - t:.0f}s)")

    _stage("2/8 dataset: coco_to_tfrecord")
    coco_to_tfrecord.run(["--annotations", annotations, "--images", f"{world}/images", "--output_dir",
                          f"{out}/dataset", "--val_fraction", str(config.val_fraction), "--overwrite"])

    _stage("3/8 training (tiny FCN-8s on the CPU)")
    history = train.main(["--progress", "2", "--train_data", f"{out}/dataset/train-*.tfrecord", "--val_data",
                          f"{out}/dataset/val-*.tfrecord", "--model_dir", f"{out}/model", "--config", "tiny",
                          "--epochs", str(config.epochs), "--image_size", "128"])

    _stage("4/8 evaluation")
    # "road" also scored as the KITTI road benchmark scores it (MaxF, AP, the rubric rates)
    metrics = evaluate.main(["--model", f"{out}/model", "--data", f"{out}/dataset/val-*.tfrecord",
                             "--output", f"{out}/metrics.json", "--positive_class", "road"])

    _stage("5/8 batch segmentation of held-back scenes and the GeoTIFF")
    batch_segment.run(["--model", f"{out}/model", "--input", f"{holdout}/images/*", "--output_dir",
                       f"{out}/segmentation", "--tile_size", str(config.tile_size), "--overlays"])

    _stage("6/8 land-cover chips: the GeoTIFF and its label raster -> segpipe dataset raster -> evaluate")
    from pipelines import raster_to_tfrecord
    colors = f"{out}/raster_labels/colors.json"
    with open(colors, "w") as handle:  # the label raster holds the class indices themselves
        json.dump({"classes": ["background"] + [c["name"] for c in demo_data.CATEGORIES],
                   "colors": [{"color": [k], "index": k} for k in range(len(demo_data.CATEGORIES) + 1)]}, handle)
    raster_to_tfrecord.run(["--scenes", f"{holdout}/images/mosaic.tif", "--labels", f"{out}/raster_labels/mosaic.tif",
                            "--mask_colors", colors, "--output_dir", f"{out}/raster_dataset", "--chip_size",
                            str(config.tile_size), "--overwrite"])
    raster_metrics = evaluate.main(["--model", f"{out}/model", "--data", f"{out}/raster_dataset", "--split", "train",
                                    "--output", f"{out}/raster_metrics.json", "--positive_class", "road"])

    _stage("7/8 one round of the labeling loop (pool -> review -> Label Studio export -> fine-tune)")
    from pipelines.labeling import loop as labeling_loop
    loop = labeling_loop.run_loop(out, f"{out}/model", f"{out}/dataset", f"{holdout}/annotations.json",
                                  f"{holdout}/images", config.loop_pool, config.loop_count, config.loop_epochs,
                                  config.image_size, config.seed)
    print(f"held-back mean IoU: base {loop['base']:.3f}; +{config.loop_count} most uncertain {loop['uncertain']:.3f}, "
          f"+{config.loop_count} random {loop['random']:.3f}, no new labels {loop['no_new_labels']:.3f}")

    _stage("8/8 report")
    page = report.build_report(f"{out}/report", f"{out}/dataset", f"{out}/model", f"{out}/metrics.json",
                               f"{out}/segmentation", f"{out}/dataset/val-*.tfrecord", title="segpipe demo",
                               loop=f"{out}/loop/loop.json")
    print(f"\nvalidation mean IoU: {metrics['mean_iou']:.3f} (pixel accuracy {metrics['pixel_accuracy']:.3f}); "
          f"demo took {time.time() - started:.0f}s")
    print(f"report: {page}")
    return {"metrics": metrics, "history": history, "report": page, "loop": loop, "raster_metrics": raster_metrics}


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    args = make_parser().parse_args(argv)
    return run_demo(args.output_dir, config_from_args(args))


if __name__ == "__main__":
    main(sys.argv[1:])
