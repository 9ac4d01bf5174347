"""COCO instance annotations + images -> sharded TFRecords of (image, class mask).

    python -m pipelines.coco_to_tfrecord --annotations A.json --images DIR --output_dir OUT \\
        [--classes all|voc|CLASSES.json] [--split train] [--val_fraction 0.0] [--num_shards N] \\
        [--crowd ignore|class|drop] [--overlap smaller_on_top|ignore] [Beam options]

How it scales: the annotation JSON's three sections are streamed in parallel passes (ijson,
never the whole 450 MB document in memory) into small keyed elements, images keyed by id and
annotations keyed by image id; a CoGroupByKey brings each image together with its own
annotations, and from there every image is independent work spread over the workers, which read
their image files a batch at a time. Categories (a few KB) are the only side input.
"""
from __future__ import annotations

import logging

from pipelines.common import storage
from pipelines.dataset.coco import build_pipeline, parse_classes
from pipelines.dataset.job import checked_config, run_dataset_job
from segcli.coco import CocoConfig, make_parser


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    if not storage.exists(known.annotations):
        raise SystemExit(f"coco_to_tfrecord: --annotations {known.annotations} does not exist")
    config = checked_config("segpipe dataset coco", lambda: CocoConfig(
        images_root=known.images, crowd=known.crowd, overlap=known.overlap, split=known.split,
        val_fraction=known.val_fraction, max_image_pixels=known.max_image_pixels))
    return run_dataset_job(
        "coco_to_tfrecord", "segpipe dataset coco", vars(known), beam_args, output_dir=known.output_dir,
        inputs=(f"{known.images.rstrip('/')}/*",), split=known.split, overwrite=known.overwrite,
        build=lambda p, description: build_pipeline(p, known.annotations, config, parse_classes(known.classes),
                                                    known.output_dir, known.num_shards, description=description),
        test_pipeline=test_pipeline, save_main_session=save_main_session)

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
