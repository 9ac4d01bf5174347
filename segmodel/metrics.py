"""Confusion-matrix metrics: the FCN paper's pixel accuracy, mean accuracy, mean IoU and
frequency-weighted IoU, plus per-class IoU. Ignore pixels (255) never count; classes absent from
both prediction and truth are left out of the means."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from segformat.masks import IGNORE_INDEX


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """NumPy confusion matrix [truth, prediction], ignore pixels excluded."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    valid = (labels != IGNORE_INDEX) & (labels < num_classes)
    return np.bincount(labels[valid] * num_classes + predictions[valid],
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(confusion, class_names=None) -> dict:
    """The metrics.json document (docs/model.md) from a confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    tp = np.diag(cm)
    truth, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (truth + predicted) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (truth + predicted - tp)
        accuracy = tp / truth
        precision = tp / predicted
        f1 = 2 * tp / (truth + predicted)
    total = cm.sum()
    in_truth = truth > 0
    return {
        "mean_iou": float(np.mean(iou[present])) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(np.mean(accuracy[in_truth])) if in_truth.any() else 0.0,
        "frequency_weighted_iou": float(np.sum(truth[present] * iou[present]) / total) if total else 0.0,
        "per_class_iou": {names[i]: (float(iou[i]) if present[i] else None) for i in range(n)},
        # precision: of the pixels predicted as the class, the share truly it; recall: of its true
        # pixels, the share found (None where undefined: nothing predicted, or none in the truth)
        "per_class_precision": {names[i]: (float(precision[i]) if predicted[i] else None) for i in range(n)},
        "per_class_recall": {names[i]: (float(accuracy[i]) if truth[i] else None) for i in range(n)},
        "per_class_f1": {names[i]: (float(f1[i]) if present[i] else None) for i in range(n)},
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


@keras.saving.register_keras_serializable(package="segmodel")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """Streaming confusion matrix over batches of (labels, logits); ``result()`` is mean IoU
    (so Keras logs ``mean_iou`` / ``val_mean_iou``); ``scores()`` gives the full document."""

    def __init__(self, num_classes: int, name: str = "mean_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        # float64: exact counts up to 2**53 pixels (COCO val is ~1.5e9; float32 would round).
        self.matrix = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", dtype="float64",
                                        name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        predictions = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        valid = ops.logical_and(ops.not_equal(labels, IGNORE_INDEX), ops.less(labels, self.num_classes))
        index = ops.where(valid, labels * self.num_classes + predictions, 0)
        counts = ops.segment_sum(ops.cast(valid, "float64"), index, num_segments=self.num_classes ** 2)
        self.matrix.assign_add(ops.reshape(counts, (self.num_classes, self.num_classes)))

    def result(self):
        cm = self.matrix
        tp = ops.diagonal(cm)
        truth, predicted = ops.sum(cm, axis=1), ops.sum(cm, axis=0)
        union = truth + predicted - tp
        present = ops.greater(truth + predicted, 0)
        iou = ops.where(present, tp / ops.maximum(union, 1.0), 0.0)
        return ops.cast(ops.sum(iou) / ops.maximum(ops.sum(ops.cast(present, "float64")), 1.0), "float32")

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes), dtype="float64"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
