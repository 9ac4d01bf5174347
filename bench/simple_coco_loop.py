"""Baseline (a): the straightforward single-process converter most projects start with:
pycocotools annToMask per instance, Pillow PNG encode, tf.io.TFRecordWriter.

    python bench/simple_coco_loop.py ANNOTATIONS IMAGES_DIR OUTPUT.tfrecord
"""
import io
import sys

import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools.coco import COCO


def main(annotations, images, output):
    coco = COCO(annotations)
    index = {cid: k + 1 for k, cid in enumerate(sorted(coco.getCatIds()))}
    with tf.io.TFRecordWriter(output) as writer:
        for image_id, info in coco.imgs.items():
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


if __name__ == "__main__":
    main(*sys.argv[1:4])
