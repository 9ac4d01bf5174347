"""Score an exported model on segmentation TFRecords at full image size (no resize, no crop).

    python -m segmodel.evaluate --model MODEL --data 'OUT/val-*.tfrecord' --output metrics.json
"""
from __future__ import annotations

import json
import logging
import sys

import numpy as np

from segcli.evaluate import make_parser

LOG = logging.getLogger(__name__)


def load_model(model: str):
    """The exported model (a MODEL folder or .keras file, local or remote) and its class names
    (None when classes.json is missing)."""
    import tensorflow as tf

    from segmodel.exported import class_names, load_exported, model_files
    names = list(class_names(model)) if tf.io.gfile.exists(model_files(model)[1]) else None
    return load_exported(model), names


def predict_classes(model, images) -> np.ndarray:
    return np.argmax(np.asarray(model(images, training=False)), axis=-1)


def evaluate(model, data: str, class_names=None, split: str = "val") -> dict:
    from segmodel import dataset, metrics
    from segmodel.exported import as_nhwc
    model = as_nhwc(model)  # a torchvision-style export scores through the network it wraps
    num_classes = len(class_names) if class_names else int(model.outputs[0].shape[-1])
    cm = np.zeros((num_classes, num_classes), np.int64)
    images = 0
    for image, mask in dataset.evaluation_dataset(data, split):
        cm += metrics.confusion_matrix(mask.numpy()[..., 0], predict_classes(model, image), num_classes)
        images += 1
    result = metrics.scores(cm, class_names)
    result["images"] = images
    return result


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = make_parser().parse_args(argv)
    import tensorflow as tf
    model, names = load_model(args.model)
    result = evaluate(model, args.data, names, args.split)
    with tf.io.gfile.GFile(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"mean IoU {result['mean_iou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} "
          f"over {result['images']} images -> {args.output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
