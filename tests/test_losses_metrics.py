"""Loss and metrics against plain NumPy."""
import json

import numpy as np

from segmodel.exported import register_custom_objects
from segmodel.losses import MaskedCrossEntropy
from segmodel.metrics import ConfusionMatrixMetric, confusion_matrix, scores

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers


def random_case(seed, n=4, shape=(3, 17, 19)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n, shape)
    labels[rng.random(shape) < 0.2] = 255
    logits = rng.normal(size=shape + (n,)).astype("float32")
    return labels, logits


def numpy_metrics(labels, predictions, n):
    cm = np.zeros((n, n))
    for t, p in zip(labels.ravel(), predictions.ravel()):
        if t != 255:
            cm[t, p] += 1
    iou, acc = [], []
    for c in range(n):
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        if tp + fn + fp > 0:
            iou.append(tp / (tp + fn + fp))
        if cm[c].sum() > 0:
            acc.append(tp / cm[c].sum())
    freq = cm.sum(1) / cm.sum()
    fw = sum(freq[c] * cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])
             for c in range(n) if cm[c].sum() + cm[:, c].sum() > 0)
    return cm, np.mean(iou), np.trace(cm) / cm.sum(), np.mean(acc), fw


def test_metrics_equal_numpy():
    for seed in range(3):
        labels, logits = random_case(seed)
        predictions = logits.argmax(-1)
        predictions[predictions == 3] = 2  # class 3 never predicted
        labels[labels == 3] = 255  # and never true: it must drop out of the means
        cm, miou, pa, ma, fw = numpy_metrics(labels, predictions, 4)
        ours = scores(confusion_matrix(labels, predictions, 4), ["a", "b", "c", "d"])
        assert ours["confusion_matrix"] == cm.astype(int).tolist()
        assert np.isclose(ours["mean_iou"], miou) and np.isclose(ours["pixel_accuracy"], pa)
        assert np.isclose(ours["mean_accuracy"], ma) and np.isclose(ours["frequency_weighted_iou"], fw)
        assert ours["per_class_iou"]["d"] is None
        onehot = np.eye(4, dtype="float32")[predictions] * 10
        metric = ConfusionMatrixMetric(4)
        metric.update_state(labels[:2, ..., None], onehot[:2])  # streaming over two batches
        metric.update_state(labels[2:, ..., None], onehot[2:])
        np.testing.assert_array_equal(metric.matrix.numpy(), cm)
        assert np.isclose(float(metric.result()), miou, atol=1e-6)


def test_loss_ignores_255_and_weights_classes():
    labels, logits = random_case(5)
    valid = labels != 255
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    loss = float(MaskedCrossEntropy()(labels[..., None], logits))
    assert np.isclose(loss, nll[valid].mean(), rtol=1e-5)
    changed = logits.copy()
    changed[~valid] = 1000.0  # whatever the net says on ignore pixels does not matter
    assert np.isclose(float(MaskedCrossEntropy()(labels[..., None], changed)), loss, rtol=1e-6)
    weights = np.array([1.0, 2.0, 0.5, 3.0])
    w = weights[np.where(valid, labels, 0)] * valid
    weighted = float(MaskedCrossEntropy(class_weights=weights)(labels, logits))
    assert np.isclose(weighted, (nll * w).sum() / w.sum(), rtol=1e-5)


def test_class_weights_are_median_frequency_over_frequency_to_the_power(tmp_path):
    """stats.json's pixel counts 800/100/100/0 (frequencies 0.8, 0.1, 0.1; median 0.1): plain
    median-frequency balancing (power 1) gives 1/8, 1, 1; power 0.5 their square roots; a class
    with no pixels keeps weight 1."""
    from segmodel.losses import class_weights_from_stats
    names = ["road", "car", "sign", "boat"]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"name": n} for n in names]}))
    (tmp_path / "stats.json").write_text(json.dumps({"pixels_per_class": {"road": 800, "car": 100, "sign": 100}}))
    stats = str(tmp_path / "stats.json")
    assert np.allclose(class_weights_from_stats(stats, 4, power=1.0), [0.125, 1, 1, 1])
    assert np.allclose(class_weights_from_stats(stats, 4, power=0.5), [0.35355339, 1, 1, 1])
    assert np.allclose(class_weights_from_stats(stats, 4), [0.35355339, 1, 1, 1])  # the damped default
