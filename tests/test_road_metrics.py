"""Road metrics against a NumPy transcription of the KITTI road devkit's evaluation
(devkit_road/python/helper.py: evalExp, pxEval_maximizeFMeasure, calcEvalMeasures; and
evaluateRoad.py's reading of the ground truth and of an 8-bit probability image), on the real
KITTI samples in ../shared/testdata and on a case computed by hand."""
import json

import numpy as np
import pytest
from PIL import Image

from segmodel import road_metrics

# ---- the devkit, written out (per image, then summed over images, as evaluateRoad.py does) ----
THRESH = np.array(range(0, 256)) / 255.0


def devkit_eval_exp(gt_bin, cur_prob, thres, valid_map):
    thres_inf = np.concatenate(([-np.inf], thres, [np.inf]))
    fn_array = cur_prob[(gt_bin == True) & (valid_map == True)]  # noqa: E712 (the devkit's comparisons)
    fn_hist = np.histogram(fn_array, bins=thres_inf)[0]
    fn = np.cumsum(fn_hist)[0:0 + len(thres)]
    fp_array = cur_prob[(gt_bin == False) & (valid_map == True)]  # noqa: E712
    fp_hist = np.histogram(fp_array, bins=thres_inf)[0]
    fp = np.flipud(np.cumsum(np.flipud(fp_hist)))[1:1 + len(thres)]
    pos_num = np.sum((gt_bin == True) & (valid_map == True))  # noqa: E712
    neg_num = np.sum((gt_bin == False) & (valid_map == True))  # noqa: E712
    return fn, fp, pos_num, neg_num


def devkit_maximize_f(total_pos, total_neg, total_fn, total_fp, thresh):
    total_tp = total_pos - total_fn
    total_tn = total_neg - total_fp
    recall = total_tp / float(total_pos)
    precision = total_tp / (total_tp + total_fp + 1e-10)
    invalid = (recall == 0) & (precision == 0)
    recall, precision = recall[~invalid], precision[~invalid]
    avg_prec, counter = 0, 0
    for i in np.arange(0, 1.1, 0.1):
        ind = np.where(recall >= i)
        avg_prec += max(precision[ind])
        counter += 1
    avg_prec = avg_prec / counter
    f = 2 * (precision * recall) / ((1 * precision) + recall + 1e-10)
    index = f.argmax()
    tp, tn = total_tp[~invalid][index], total_tn[~invalid][index]
    fp, fn = total_fp[~invalid][index], total_fn[~invalid][index]
    return {"max_f": f[index], "average_precision": avg_prec, "best_threshold": thresh[~invalid][index],
            "precision": tp / (tp + fp), "recall": tp / (tp + fn), "fpr": fp / (fp + tn), "fnr": fn / (tp + fn)}


def devkit_scores(pairs):
    """pairs: [(gt_image RGB uint8, probability image uint8)] -> the devkit's figures."""
    total_fn = total_fp = 0
    total_pos = total_neg = 0
    for gt, prob8 in pairs:
        road_area, valid_area = gt[..., 2] > 0, gt[..., 0] > 0  # OpenCV's BGR: [:,:,0] blue, [:,:,2] red
        cur_prob = np.clip(prob8.astype("f4") / np.iinfo(prob8.dtype).max, 0.0, 1.0)
        fn, fp, pos, neg = devkit_eval_exp(road_area, cur_prob, THRESH, valid_area)
        total_fn, total_fp, total_pos, total_neg = total_fn + fn, total_fp + fp, total_pos + pos, total_neg + neg
    return devkit_maximize_f(total_pos, total_neg, total_fn, total_fp, THRESH)


def ours(pairs):
    pos = neg = 0
    for gt, prob8 in pairs:
        p, n = road_metrics.histograms(prob8 / 255.0, gt[..., 2] > 0, gt[..., 0] > 0)
        pos, neg = pos + p, neg + n
    return road_metrics.road_scores(pos, neg)


def assert_same(got, want):
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=1e-6, abs=1e-9), key


def probability_images(photo: np.ndarray, gt: np.ndarray, seed: int):
    """Road probability images of several qualities for one real photo: a smooth guess from the
    photo's colours (grey, dark pixels read as road), a noisy version of the truth, and noise."""
    rng = np.random.default_rng(seed)
    grey = photo.mean(axis=-1)
    saturation = photo.max(axis=-1) - photo.min(axis=-1)
    guess = 1 / (1 + np.exp((saturation - 25) / 8 + (grey - 110) / 40))
    truth = (gt[..., 2] > 0).astype(float)
    noisy = np.clip(0.7 * truth + 0.3 * rng.random(truth.shape), 0, 1)
    return [np.rint(p * 255).astype(np.uint8) for p in (guess, noisy, rng.random(truth.shape))]


def kitti_pairs(testdata):
    photos = sorted((testdata / "kitti_road/image_2").glob("*.png"))
    gts = sorted((testdata / "kitti_road/gt_image_2").glob("*.png"))
    return [(np.asarray(Image.open(p).convert("RGB")), np.asarray(Image.open(g).convert("RGB")))
            for p, g in zip(photos, gts)]


def test_road_scores_match_the_devkit_on_real_kitti_images(testdata):
    pairs = kitti_pairs(testdata)
    assert len(pairs) == 3
    for quality in range(3):
        inputs = [(gt, probability_images(photo, gt, k)[quality]) for k, (photo, gt) in enumerate(pairs)]
        want = devkit_scores(inputs)
        assert_same(ours(inputs), want)
        for gt, prob8 in inputs:  # one image at a time too
            assert_same(ours([(gt, prob8)]), devkit_scores([(gt, prob8)]))
    assert 0.5 < devkit_scores([(gt, probability_images(photo, gt, 0)[1]) for photo, gt in pairs])["max_f"] <= 1


def test_road_scores_by_hand():
    """Road pixels at 0.9 and 0.6, other pixels at 0.3 and 0.7, one pixel outside the valid area.
    Thresholds above 0.3 up to 0.6: TP 2, FP 1 -> precision 2/3, recall 1, F 0.8 (the best).
    AP: best precision at recall >= 0, 0.1, ..., 0.5 is 1 (TP 1, FP 0 above 0.7); at 0.6 ... 1.0
    it is 2/3 -> (6 * 1 + 5 * 2/3) / 11."""
    prob = np.array([[0.9, 0.6, 0.3, 0.7, 0.95]])
    road = np.array([[True, True, False, False, True]])
    valid = np.array([[True, True, True, True, False]])
    got = road_metrics.road_scores(*road_metrics.histograms(prob, road, valid))
    assert got["max_f"] == pytest.approx(0.8, abs=1e-9)
    assert got["average_precision"] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-9)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == 1.0
    assert got["fpr"] == 0.5 and got["fnr"] == 0.0
    assert 0.3 < got["best_threshold"] <= 0.6
    assert got["positives"] == 2 and got["negatives"] == 2


def test_labelled_rates_from_a_confusion_matrix():
    cm = np.array([[90, 10, 0], [5, 80, 15], [0, 30, 70]])  # rows: truth; class 1 is road
    rates = road_metrics.labelled_rates(cm, 1)
    assert rates["road_labelled_road"] == pytest.approx(80 / 100)
    assert rates["non_road_labelled_road"] == pytest.approx((10 + 30) / 200)


def test_evaluate_reports_the_kitti_figures_of_a_two_class_model(tmp_path, testdata):
    """segpipe evaluate on the KITTI pairs converted by the pairs job, with a real two-class
    Keras model: metrics.json's "road" block equals the devkit transcription applied to the
    model's own softmax, quantised to 8 bits."""
    import keras

    from pipelines import masks_to_tfrecord
    from segmodel import evaluate, fcn, layers
    colors = tmp_path / "colors.json"
    colors.write_text(json.dumps({"classes": ["not_road", "road"],
                                  "colors": [{"color": [255, 0, 255], "index": 1}, {"color": [255, 0, 0], "index": 0},
                                             {"color": [0, 0, 0], "index": 255}]}))
    kitti = testdata / "kitti_road"
    masks_to_tfrecord.run(["--images", f"{kitti}/image_2/*.png", "--masks", f"{kitti}/gt_image_2/*.png",
                           "--output_dir", str(tmp_path / "data"), "--mask_colors", str(colors),
                           "--image_key_regex", r"^(.+)_(\d+)$", "--mask_key_regex", r"^(.+)_road_(\d+)$"])
    images = keras.Input((None, None, 3))
    x = layers.Normalize("imagenet")(images)
    x = keras.layers.Conv2D(8, 1, activation="relu", kernel_initializer=keras.initializers.RandomNormal(seed=3))(x)
    model = keras.Model(images, keras.layers.Conv2D(2, 1, kernel_initializer=keras.initializers.RandomNormal(seed=4))(x))
    fcn.export_model(model, str(tmp_path / "model/model.keras"))
    (tmp_path / "model/classes.json").write_text(json.dumps({"classes": [{"index": 0, "name": "not_road"},
                                                                         {"index": 1, "name": "road"}]}))
    evaluate.main(["--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--split", "train",
                   "--output", str(tmp_path / "metrics.json")])
    road = json.loads((tmp_path / "metrics.json").read_text())["road"]
    inputs = []
    for photo, gt in kitti_pairs(testdata):
        scores = np.asarray(model(photo[None].astype("float32")), np.float64)[0]
        probability = np.exp(scores[..., 1]) / np.exp(scores).sum(-1)
        inputs.append((gt, np.rint(probability * 255).astype(np.uint8)))
    assert road["class"] == "road"
    assert_same(road, devkit_scores(inputs))
    predicted = [np.asarray(model(p[None].astype("float32")))[0].argmax(-1) for p, _ in kitti_pairs(testdata)]
    truth = [(g[..., 2] > 0, g[..., 0] > 0) for _, g in kitti_pairs(testdata)]
    road_px = sum(int((r & v).sum()) for r, v in truth)
    found = sum(int((pr == 1)[r & v].sum()) for pr, (r, v) in zip(predicted, truth))
    assert road["road_labelled_road"] == pytest.approx(found / road_px)
    from pipelines import report
    page = (tmp_path / "report" / "index.html")
    report.build_report(str(tmp_path / "report"), metrics=str(tmp_path / "metrics.json"))
    text = page.read_text()
    assert f"MaxF <b>{road['max_f']:.3f}</b>" in text and f"AP <b>{road['average_precision']:.3f}</b>" in text
    assert f"<b>{road['road_labelled_road']:.1%}</b> of road pixels as road" in text


def test_road_scores_of_images_without_road_or_without_anything_else():
    """No road pixel: nothing to find (0, 0, the counts); only road pixels: found at every
    threshold up to their probability, no false positive rate to speak of."""
    none = road_metrics.road_scores(*road_metrics.histograms(np.array([[0.2, 0.9]]), np.zeros((1, 2), bool)))
    assert none == {"max_f": 0.0, "average_precision": 0.0, "positives": 0, "negatives": 2}
    empty = road_metrics.road_scores(np.zeros(256, np.int64), np.zeros(256, np.int64))
    assert empty == {"max_f": 0.0, "average_precision": 0.0, "positives": 0, "negatives": 0}
    only = road_metrics.road_scores(*road_metrics.histograms(np.array([[0.5, 1.0]]), np.ones((1, 2), bool)))
    assert only["max_f"] == pytest.approx(1.0) and only["average_precision"] == pytest.approx(1.0)
    assert only["precision"] == 1.0 and only["recall"] == 1.0 and only["fpr"] == 0.0 and only["fnr"] == 0.0
    assert only["best_threshold"] <= 0.5 and (only["positives"], only["negatives"]) == (2, 0)
    # the integer histograms themselves give the same scores as float ones
    pos, neg = road_metrics.histograms(np.array([[0.9, 0.6, 0.3, 0.7]]), np.array([[True, True, False, False]]))
    assert pos.dtype.kind == "i" and pos.sum() == 2 and neg.sum() == 2
    assert road_metrics.road_scores(pos, neg) == road_metrics.road_scores(pos.astype(float), neg.astype(float))


def test_quantizing_is_the_devkits_8_bit_image():
    p = np.array([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.2])
    assert road_metrics.quantize(p).tolist() == [0, 0, 0, 2, 128, 255, 255]  # round half to even, clipped
    assert road_metrics.quantize(p).dtype == np.int64
    assert road_metrics.quantize(np.float32(0.2)) == 51
    counts = road_metrics.histograms(np.array([[1.0, 1.0, 0.0]]), np.array([[True, False, True]]),
                                     np.array([[True, True, False]]))
    assert counts[0].tolist() == [0] * 255 + [1] and counts[1].tolist() == [0] * 255 + [1]
    assert len(counts[0]) == 256 and len(road_metrics.histograms(np.zeros((1, 1)), np.zeros((1, 1), bool))[1]) == 256
