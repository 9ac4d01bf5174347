"""Score an exported model on segmentation TFRecords at full image size (no resize, no crop).

    python -m segmodel.evaluate --model MODEL --data 'OUT/val-*.tfrecord' --output metrics.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

LOG = logging.getLogger(__name__)


def load_model(model_dir: str):
    """MODEL/model.keras (copied locally first if TensorFlow cannot open the path) and class names."""
    import keras
    import tensorflow as tf

    import segmodel  # noqa: F401  (registers custom objects)
    path = model_dir if model_dir.endswith(".keras") else f"{model_dir}/model.keras"
    local = path
    if "://" in path:
        import tempfile
        local = f"{tempfile.mkdtemp()}/model.keras"
        tf.io.gfile.copy(path, local, overwrite=True)
    model = keras.models.load_model(local, compile=False)
    classes_path = f"{path.rsplit('/', 1)[0]}/classes.json"
    names = None
    if tf.io.gfile.exists(classes_path):
        with tf.io.gfile.GFile(classes_path) as handle:
            names = [c["name"] for c in json.load(handle)["classes"]]
    return model, names


def predict_classes(model, images) -> np.ndarray:
    scores = model(images, training=False)
    if isinstance(scores, dict):  # the torchvision-style export: {"out": [N, C, H, W]}
        return np.argmax(np.asarray(scores["out"]), axis=1)
    return np.argmax(np.asarray(scores), axis=-1)


def evaluate(model, data: str, class_names=None) -> dict:
    from segmodel import dataset, metrics
    num_classes = len(class_names) if class_names else int(model.outputs[0].shape[-1])
    cm = np.zeros((num_classes, num_classes), np.int64)
    images = 0
    for image, mask in dataset.evaluation_dataset(data):
        cm += metrics.confusion_matrix(mask.numpy()[..., 0], predict_classes(model, image), num_classes)
        images += 1
    result = metrics.scores(cm, class_names)
    result["images"] = images
    return result


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="MODEL dir (or a .keras file)")
    parser.add_argument("--data", required=True, help="glob of TFRecord shards")
    parser.add_argument("--output", default="metrics.json")
    args = parser.parse_args(argv)
    import tensorflow as tf
    model, names = load_model(args.model)
    result = evaluate(model, args.data, names)
    with tf.io.gfile.GFile(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"mean IoU {result['mean_iou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} "
          f"over {result['images']} images -> {args.output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
