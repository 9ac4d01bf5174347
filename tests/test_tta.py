"""Test-time augmentation (segmodel.tta) against an independent NumPy reference: bilinear
resizing transcribed from its definition (half-pixel centres, edges clamped), the views'
softmax probabilities averaged; and the flags of segpipe evaluate and segpipe segment."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

NAMES = ["background", "road", "building", "water"]


def spatial_model(model_dir=None):
    """A real Keras model of the exported interface whose scores depend on each pixel's
    neighbours, unevenly left and right (random 3x3 kernels, zero padding): neither mirroring nor
    rescaling leaves its output unchanged. Exported into ``model_dir`` with classes.json."""
    import keras

    from segmodel import fcn
    images = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 64.0, offset=-2.0)(images)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.6, seed=4))(x)
    scores = keras.layers.Conv2D(4, 3, padding="same",
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=0.8, seed=5))(x)
    model = keras.Model(images, scores)
    if model_dir is not None:
        fcn.export_model(model, str(model_dir / "model.keras"))
        (model_dir / "classes.json").write_text(json.dumps(
            {"ignore_index": 255, "classes": [{"index": i, "name": n} for i, n in enumerate(NAMES)]}))
    return model


def resize_bilinear(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> [height, width, C]: output pixel i samples the input at (i + 0.5) * in / out
    - 0.5, linearly between its two neighbours, clamped at the edges (no antialiasing)."""
    def taps(n_out, n_in):
        where = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(where).astype(int)
        return low, np.minimum(low + 1, n_in - 1), where - low
    r0, r1, wr = taps(height, a.shape[0])
    c0, c1, wc = taps(width, a.shape[1])
    rows = a[r0] * (1 - wr)[:, None, None] + a[r1] * wr[:, None, None]
    return rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]


def softmax(scores):
    shifted = np.exp(scores - scores.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def reference_probabilities(model, image: np.ndarray, scales, flip: bool) -> np.ndarray:
    """The mean over views of softmax(scores), each view's scores mirrored and resized back."""
    h, w = image.shape[:2]
    views = []
    for scale in scales:
        scaled = image if scale == 1 else resize_bilinear(image, int(round(h * scale)), int(round(w * scale)))
        for mirrored in ((False, True) if flip else (False,)):
            view = scaled[:, ::-1] if mirrored else scaled
            scores = np.asarray(model(view[None].astype(np.float32)), np.float64)[0]
            if mirrored:
                scores = scores[:, ::-1]
            if scale != 1:
                scores = resize_bilinear(scores, h, w)
            views.append(softmax(scores))
    return np.mean(views, axis=0)


def test_views_average_the_probabilities_of_mirrored_and_rescaled_images():
    from segmodel.tta import with_test_time_augmentation
    model = spatial_model()
    # 20x28: every scale gives a whole size (no rounding tie), 0.75 and 1.25 odd ones
    image = np.random.default_rng(0).uniform(0, 255, (20, 28, 3)).astype(np.float32)
    for scales, flip in (((1.0,), True), ((1.0, 1.5), False), ((0.75, 1.0, 1.25), True)):
        augmented = with_test_time_augmentation(model, scales, flip)
        scores = np.asarray(augmented(image[None]), np.float64)[0]
        assert scores.shape == (20, 28, 4)
        expected = reference_probabilities(model, image, scales, flip)
        np.testing.assert_allclose(softmax(scores), expected, atol=2e-5, err_msg=f"{scales} {flip}")
        np.testing.assert_allclose(np.exp(scores), expected, atol=2e-5)  # log-probabilities, not logits
    # the views do change the prediction of this model (the reference is not trivially the single view)
    single = softmax(np.asarray(model(image[None]), np.float64)[0])
    assert np.abs(reference_probabilities(model, image, (1.0,), True) - single).max() > 0.05
    assert np.abs(reference_probabilities(model, image, (1.0, 1.5), False) - single).max() > 0.05


def test_the_single_view_is_the_model_itself_and_bad_scales_are_refused():
    from segcli.tta import parse_scales
    from segmodel.tta import with_test_time_augmentation
    model = spatial_model()
    assert with_test_time_augmentation(model, (1.0,), False) is model
    assert parse_scales("1,1.25") == (1.0, 1.25)
    for bad in ("0", "1,1", "x", "", "1,2,3,4,1.5,0.5,0.75"):
        with pytest.raises(Exception):
            parse_scales(bad)
    with pytest.raises(ValueError):
        with_test_time_augmentation(model, (0.0,), True)


def test_segment_and_evaluate_predict_through_the_views_their_flags_name(demo_dataset, tmp_path):
    from pipelines import batch_segment
    from segmodel import evaluate as evaluate_module
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = spatial_model(model_dir)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    images = {name: rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for name in ("a", "b")}
    for name, image in images.items():
        Image.fromarray(image).save(inputs / f"{name}.png")
    # one tile per photo (smaller than the tile): the mask is the argmax of the averaged views
    batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir",
                       str(tmp_path / "out"), "--tta_scales", "1,1.25", "--tta_flip"])
    for name, image in images.items():
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))
        expected = reference_probabilities(model, image.astype(np.float32), (1.0, 1.25), True).argmax(-1)
        plain = softmax(np.asarray(model(image[None].astype(np.float32)), np.float64)[0]).argmax(-1)
        assert (expected != plain).mean() > 0.02  # the views matter for these photos
        assert (mask != expected).mean() < 0.002, name  # float32 ties aside
    with pytest.raises(SystemExit):
        batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir",
                           str(tmp_path / "bad"), "--tta_scales", "1,1"])

    # the Label Studio backend's masks from the model on the request path: segment's, views and all
    from pipelines.labeling.backend import Predictor
    from segcli.serve import BackendConfig, make_parser
    args = make_parser().parse_args(["--model", str(model_dir), "--tta_scales", "1,1.25", "--tta_flip"])
    predictor = Predictor(BackendConfig(**vars(args)))
    predictor.load()
    for name in images:
        served, _, source = predictor.predict(f"{name}.png", lambda: (inputs / f"{name}.png").read_bytes())
        assert source == "model"
        assert np.array_equal(served, np.asarray(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))), name
    # and CVAT's auto-annotation function, with the -p parameters as cvat-cli itself parses them
    from cvat_cli._internal.parsers import parse_function_parameter

    from pipelines.labeling import cvat_function
    params = dict(parse_function_parameter(p) for p in (f"model=str:{model_dir}", "tta_scales=str:1,1.25",
                                                         "tta_flip=bool:true"))
    function = cvat_function.create(**params)
    for name in images:
        mask, _ = function.segment(Image.open(inputs / f"{name}.png"))
        assert np.array_equal(mask, np.asarray(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))), name

    # segpipe evaluate: the flags score the views, and the metrics say which were used
    def evaluate(*flags):
        out = tmp_path / f"metrics{len(flags)}.json"
        evaluate_module.main(["--model", str(model_dir), "--data", str(demo_dataset), "--split", "val",
                              "--output", str(out), *flags])
        return json.loads(out.read_text())
    plain, flipped = evaluate(), evaluate("--tta_flip")
    assert plain["test_time_augmentation"] == {"scales": [1.0], "flip": False}
    assert flipped["test_time_augmentation"] == {"scales": [1.0], "flip": True}
    # the reference confusion matrix: the demo val images through the NumPy views
    from segmodel import dataset, metrics
    cm = np.zeros((4, 4), np.int64)
    for image, mask in dataset.evaluation_dataset(str(demo_dataset), "val"):
        predicted = reference_probabilities(model, image.numpy()[0].astype(np.float32), (1.0,), True).argmax(-1)
        cm += metrics.confusion_matrix(mask.numpy()[0, ..., 0], predicted, 4)
    assert np.abs(np.array(flipped["confusion_matrix"]) - cm).sum() <= cm.sum() * 1e-4
    assert np.abs(np.array(plain["confusion_matrix"]) - cm).sum() > cm.sum() * 1e-3
