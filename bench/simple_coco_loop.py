"""Baselines (a) and (d): the straightforward converter most projects start with: pycocotools
annToMask per instance painted into one semantic mask (largest first, crowds -> 255), Pillow PNG
encode, tf.io.TFRecordWriter. The same output as this project's pipeline: one semantic mask per
image, the original image bytes, in TFRecords.

    python bench/simple_coco_loop.py ANNOTATIONS IMAGES_DIR OUTPUT_PREFIX [--processes N]

With N processes the images are split by id into N shards (OUTPUT_PREFIX-K-of-N.tfrecord).
Prints the number of records written.
"""
import argparse
import io
import multiprocessing

import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools.coco import COCO


def convert(annotations, images, output, part, parts):
    coco = COCO(annotations)
    index = {cid: k + 1 for k, cid in enumerate(sorted(coco.getCatIds()))}
    written = 0
    with tf.io.TFRecordWriter(f"{output}-{part:05d}-of-{parts:05d}.tfrecord") as writer:
        for image_id, info in sorted(coco.imgs.items()):
            if image_id % parts != part:
                continue
            data = open(f"{images}/{info['file_name']}", "rb").read()
            mask = np.zeros((info["height"], info["width"]), np.uint8)
            anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), key=lambda a: -a["area"])
            for ann in anns:
                m = coco.annToMask(ann).astype(bool)
                mask[m] = 255 if ann["iscrowd"] else index[ann["category_id"]]
            buffer = io.BytesIO()
            Image.fromarray(mask).save(buffer, format="PNG")
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[info["height"]])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[info["width"]])),
                "image/segmentation/class/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            written += 1
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations")
    parser.add_argument("images")
    parser.add_argument("output_prefix")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    jobs = [(args.annotations, args.images, args.output_prefix, k, args.processes) for k in range(args.processes)]
    if args.processes == 1:
        written = [convert(*jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            written = pool.starmap(convert, jobs)
    print(f"RECORDS {sum(written)}")


if __name__ == "__main__":
    main()
