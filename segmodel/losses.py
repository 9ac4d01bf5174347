"""Per-pixel cross-entropy that skips ignore pixels (255), optionally class-weighted."""
from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from segformat.masks import IGNORE_INDEX


@keras.saving.register_keras_serializable(package="segmodel")
class MaskedCrossEntropy(keras.losses.Loss):
    """Mean softmax cross-entropy over the pixels whose label is not ``ignore_index``.

    ``y_true``: int labels [N, H, W] or [N, H, W, 1]; ``y_pred``: logits [N, H, W, C].
    With ``class_weights`` each pixel counts with its class's weight (and the mean divides by the
    summed weights), the usual way to keep rare classes from vanishing.

    Under a tf.distribute strategy with several replicas (GPUs, workers) the value is divided by
    their number, as Keras's own losses are (its reduction does it, and it skips a loss that is
    already a scalar): the replicas' gradients are summed, and Keras multiplies the logged loss
    back. Each replica's mean is over its own pixels, so with the same count of valid pixels
    per replica the step equals one process's over the whole global batch.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights=None, name="masked_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, axis=-1)
        valid = ops.not_equal(labels, self.ignore_index)
        safe = ops.where(valid, labels, ops.zeros_like(labels))
        logits = ops.cast(y_pred, "float32")
        losses = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
        weights = ops.cast(valid, "float32")
        if self.class_weights is not None:
            weights = weights * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), safe)
        mean = ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1e-6)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return mean / replicas if replicas > 1 else mean

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index, "class_weights": self.class_weights}


def class_weights_from_stats(stats_path: str, num_classes: int, power: float = 0.5) -> list:
    """Inverse-frequency class weights from a dataset's stats.json, ``(median_freq / freq) ** power``
    (power 0.5 damps the extreme weights plain median-frequency balancing gives rare classes)."""
    with tf.io.gfile.GFile(stats_path) as handle:
        stats = json.load(handle)
    with tf.io.gfile.GFile(stats_path.rsplit("/", 1)[0] + "/classes.json") as handle:
        names = [c["name"] for c in json.load(handle)["classes"]]
    pixels = np.array([float(stats["pixels_per_class"].get(n, 0)) for n in names[:num_classes]])
    freq = pixels / max(pixels.sum(), 1.0)
    present = freq > 0
    weights = np.ones(num_classes)
    if present.any():
        median = np.median(freq[present])
        weights[present] = (median / freq[present]) ** power
    return weights.tolist()
