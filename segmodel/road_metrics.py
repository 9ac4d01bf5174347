"""Road segmentation scored as the KITTI road benchmark scores it, in the image (perspective) space.

The KITTI road devkit (``devkit_road/python/evaluateRoad.py`` and ``helper.py``) reads a road
probability map saved as an 8-bit image, ``p = uint8 / 255`` (float32), and for each of the 256
thresholds ``t_k = k / 255`` counts a pixel as road when ``p >= t_k``; pixels outside the valid
area of the ground truth are left out. Over all images it forms precision and recall per
threshold and reports:

* **MaxF**: the largest F1 over the thresholds, with precision, recall, FPR and FNR at that
  threshold;
* **AP**: the PASCAL VOC 11-point average precision (the mean, over recall levels 0, 0.1, ..., 1,
  of the best precision at a recall at least that level).

Here the probability is the model's softmax for the positive class, quantised to 8 bits as the
devkit's input would be (``round(p * 255)``). Only 256 counts per class are kept per image, so
the scores stream over any number of images. The devkit's own float32/float64 comparison is
kept: a quantised value ``q`` is road at threshold ``k`` when ``float32(q / 255) >= k / 255``.
"""
from __future__ import annotations

import numpy as np

LEVELS = 256


def quantize(probability: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> the 8-bit values a devkit input image would hold."""
    return np.clip(np.rint(np.asarray(probability, np.float64) * 255.0), 0, 255).astype(np.int64)


def histograms(probability: np.ndarray, positive: np.ndarray, valid: np.ndarray | None = None):
    """Counts of the quantised probability (256 bins) over positive and over negative pixels."""
    q = quantize(probability)
    keep = np.ones(q.shape, bool) if valid is None else np.asarray(valid, bool)
    positive = np.asarray(positive, bool)
    return (np.bincount(q[keep & positive], minlength=LEVELS),
            np.bincount(q[keep & ~positive], minlength=LEVELS))


# at_least[q, k]: a pixel of quantised value q counts as road at threshold k (the devkit's floats)
_AT_LEAST = (np.arange(LEVELS, dtype=np.float32)[:, None] / np.float32(255)) >= (np.arange(LEVELS) / 255.0)[None, :]


def road_scores(positive_hist: np.ndarray, negative_hist: np.ndarray) -> dict:
    """MaxF, AP and the operating point from the summed histograms (see the module docstring)."""
    pos = np.asarray(positive_hist, np.float64)
    neg = np.asarray(negative_hist, np.float64)
    positives, negatives = pos.sum(), neg.sum()
    tp = pos @ _AT_LEAST  # road pixels called road, per threshold
    fp = neg @ _AT_LEAST
    recall = tp / positives if positives else np.zeros(LEVELS)
    precision = tp / (tp + fp + 1e-10)
    # The devkit leaves out the thresholds where recall and precision are both 0: no road pixel
    # called road (tp = 0). Threshold 0 calls every pixel road, so with any road pixel there is
    # one with recall 1, and every recall level of the AP below has a point.
    usable = tp > 0
    if not usable.any():
        return {"max_f": 0.0, "average_precision": 0.0, "positives": int(positives), "negatives": int(negatives)}
    r, p, thresholds = recall[usable], precision[usable], np.flatnonzero(usable)
    levels = [p[r >= level].max() for level in np.arange(0, 1.1, 0.1)]
    f = 2 * p * r / (p + r + 1e-10)
    best = int(np.argmax(f))
    k = thresholds[best]
    return {
        "max_f": float(f[best]),
        "average_precision": float(np.mean(levels)),
        "best_threshold": float(k / 255.0),
        "precision": float(tp[k] / (tp[k] + fp[k])),
        "recall": float(tp[k] / positives),
        "fpr": float(fp[k] / negatives) if negatives else 0.0,
        "fnr": float((positives - tp[k]) / positives),
        "positives": int(positives),
        "negatives": int(negatives),
    }


def labelled_rates(confusion: np.ndarray, positive: int) -> dict:
    """The two figures road rubrics ask for, from the model's labels (argmax): the share of road
    pixels labelled road, and the share of other pixels labelled road."""
    cm = np.asarray(confusion, np.float64)
    road = cm[positive].sum()
    other = cm.sum() - road
    return {"road_labelled_road": float(cm[positive, positive] / road) if road else None,
            "non_road_labelled_road": float((cm[:, positive].sum() - cm[positive, positive]) / other)
            if other else None}
