"""Score an exported model on segmentation TFRecords at full image size (no resize, no crop).

    python -m segmodel.evaluate --model MODEL --data 'OUT/val-*.tfrecord' --output metrics.json
"""
from __future__ import annotations

import json
import logging
import sys

import numpy as np
import tensorflow as tf

from segcli.evaluate import make_parser
from segmodel import dataset, metrics, road_metrics
from segmodel.exported import as_nhwc, class_names, load_exported, model_files
from segmodel.tta import with_test_time_augmentation

LOG = logging.getLogger(__name__)


def load_model(model: str):
    """The exported model (a MODEL folder or .keras file, local or remote) and its class names
    (None when classes.json is missing)."""

    names = list(class_names(model)) if tf.io.gfile.exists(model_files(model)[1]) else None
    return load_exported(model), names


def predict_classes(model, images) -> np.ndarray:
    return np.argmax(np.asarray(model(images, training=False)), axis=-1)


def positive_index(names: list, positive_class: str | None):
    """The class scored as "road" (KITTI's metrics): the one named, or for a two-class model its
    second class (the first is the background); None when neither applies."""
    if positive_class:
        if positive_class not in names:
            raise ValueError(f"--positive_class {positive_class!r} is not one of the model's classes {names}")
        return names.index(positive_class)
    return 1 if len(names) == 2 else None


def evaluate(model, data: str, class_names=None, split: str = "val", positive_class: str | None = None) -> dict:
    """The FCN paper's metrics, per-class IoU, precision, recall and F1 (metrics.scores) and, for
    a road class (``positive_class``, or the second class of a two-class model), the KITTI road
    benchmark's MaxF, AP and operating point with the two rubric rates (segmodel.road_metrics)."""
    model = as_nhwc(model)  # a torchvision-style export scores through the network it wraps
    num_classes = len(class_names) if class_names else int(model.outputs[0].shape[-1])
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    positive = positive_index(names, positive_class)
    cm = np.zeros((num_classes, num_classes), np.int64)
    road_pos = np.zeros(road_metrics.LEVELS, np.int64)
    road_neg = np.zeros(road_metrics.LEVELS, np.int64)
    images = 0
    for image, mask in dataset.evaluation_dataset(data, split):
        scores = np.asarray(model(image, training=False), np.float64)
        truth = mask.numpy()[..., 0]
        cm += metrics.confusion_matrix(truth, np.argmax(scores, axis=-1), num_classes)
        if positive is not None:
            shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probability = shifted[..., positive] / shifted.sum(axis=-1)
            pos, neg = road_metrics.histograms(probability, truth == positive, truth < num_classes)
            road_pos += pos
            road_neg += neg
        images += 1
    result = metrics.scores(cm, class_names)
    result["images"] = images
    if positive is not None:
        result["road"] = {"class": names[positive], **road_metrics.road_scores(road_pos, road_neg),
                          **road_metrics.labelled_rates(cm, positive)}
    return result


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = make_parser().parse_args(argv)
    model, names = load_model(args.model)
    model = with_test_time_augmentation(model, args.tta_scales, args.tta_flip)  # load_exported gives NHWC
    result = evaluate(model, args.data, names, args.split, args.positive_class)
    result["test_time_augmentation"] = {"scales": list(args.tta_scales), "flip": args.tta_flip}
    with tf.io.gfile.GFile(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"mean IoU {result['mean_iou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} "
          f"over {result['images']} images -> {args.output}")
    if "road" in result:
        road = result["road"]
        print(f"{road['class']}: MaxF {road.get('max_f', 0):.4f}, AP {road.get('average_precision', 0):.4f}; "
              f"labelled {road['class']}: {road['road_labelled_road'] or 0:.1%} of {road['class']} pixels, "
              f"{road['non_road_labelled_road'] or 0:.1%} of the others")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
