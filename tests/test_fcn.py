"""The FCN model: shapes, bilinear initialisation, normalisation, weights, export round trip."""
import warnings

import numpy as np
import pytest
import keras
import tensorflow as tf

from segmodel.exported import register_custom_objects
from segmodel import fcn, layers, preprocess

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers

TINY = dict(width=0.125, fc_units=32)


@pytest.mark.parametrize("arch", fcn.ARCHS)
def test_output_has_the_input_size_on_odd_shapes(arch):
    model = fcn.build_fcn(arch, 5, **TINY)
    for h, w in [(375, 500), (333, 257), (10, 7), (32, 64)]:
        scores = model(np.random.default_rng(0).uniform(0, 255, (2, h, w, 3)).astype("float32"))
        assert tuple(scores.shape) == (2, h, w, 5) and scores.dtype == "float32"
    uint8 = model(np.zeros((1, 33, 31, 3), np.uint8))
    assert tuple(uint8.shape) == (1, 33, 31, 5)


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_bilinear_initialisation_equals_bilinear_resize_in_the_interior(factor):
    x = np.random.default_rng(1).normal(size=(1, 9, 11, 3)).astype("float32")
    up = keras.layers.Conv2DTranspose(3, 2 * factor, strides=factor, padding="same", use_bias=False,
                                      kernel_initializer=layers.BilinearInitializer())
    ours = np.asarray(up(x))
    expected = tf.image.resize(x, (9 * factor, 11 * factor), method="bilinear").numpy()
    border = factor  # the transposed convolution sees zeros beyond the edge; resize clamps
    np.testing.assert_allclose(ours[:, border:-border, border:-border], expected[:, border:-border, border:-border],
                               atol=1e-5)


def test_untrained_skips_and_scores_start_at_zero():
    model = fcn.build_fcn("fcn8s", 4, **TINY)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not np.any(model.get_layer(name).kernel.numpy())
    assert not model.get_layer("upscore8").trainable and model.get_layer("upscore2").trainable
    assert float(model.get_layer("scale_pool3").scale) == 0.0001


def test_normalisation_switch_follows_the_backbone_weights(tmp_path):
    images = np.random.default_rng(2).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    imagenet = np.asarray(layers.Normalize("imagenet")(images))
    np.testing.assert_allclose(imagenet, (images / 255 - preprocess.IMAGENET_MEAN) / preprocess.IMAGENET_STD,
                               rtol=1e-5, atol=1e-6)
    caffe = np.asarray(layers.Normalize("caffe")(images))
    np.testing.assert_allclose(caffe, keras.applications.vgg16.preprocess_input(images.copy()), rtol=1e-5)
    assert fcn.build_fcn("fcn32s", 3, **TINY).get_layer("normalize").mode == "imagenet"
    # Keras VGG16 weights (a local file here; 'imagenet' downloads the same kind of file once).
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fcn.build_fcn("fcn8s", 3, fc_units=64, backbone_weights=str(path))
    # Probing the file for the classifier first must not leave Keras's "layers will retain their
    # freshly-initialized weights" warning behind: every backbone layer is loaded.
    assert not [w for w in caught if "initialized weights" in str(w.message)], [str(w.message) for w in caught]
    assert model.get_layer("normalize").mode == "caffe"
    for name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), source.get_layer(name).kernel.numpy())


@pytest.mark.slow  # a full-size VGG16 classifier
def test_classifier_weights_become_fc6_and_fc7():
    source = keras.applications.VGG16(include_top=True, weights=None)
    model = fcn.build_fcn("fcn8s", 3)
    loaded = fcn.transfer_vgg16_weights(source, model)
    assert "fc6" in loaded and "fc7" in loaded and len(loaded) == 15
    fc1 = source.get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(model.get_layer("fc6").kernel.numpy(), fc1.reshape(7, 7, 512, 4096))
    # The reshaped fc6 applied to a 7x7 pool5 map equals the Dense layer on the flattened map.
    pool5 = np.random.default_rng(3).normal(size=(1, 7, 7, 512)).astype("float32")
    dense = pool5.reshape(1, -1) @ fc1
    conv = tf.nn.conv2d(pool5, model.get_layer("fc6").kernel, 1, "VALID").numpy().reshape(1, -1)
    np.testing.assert_allclose(conv, dense, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError):
        fcn.transfer_vgg16_weights(source, fcn.build_fcn("fcn8s", 3, **TINY))


def test_export_round_trip_and_torchvision_layout(tmp_path):
    model = fcn.build_fcn("fcn8s", 4, **TINY)
    rng = np.random.default_rng(4)
    for layer in model.layers:  # non-trivial weights so the comparison means something
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()])
    images = rng.uniform(0, 255, (2, 45, 61, 3)).astype("float32")
    expected = np.asarray(model(images))
    fcn.export_model(model, str(tmp_path / "model.keras"))
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(loaded(images)), expected)



@pytest.mark.parametrize("size", [(333, 257), (45, 61), (32, 32), (7, 100)])
def test_the_nchw_export_takes_torchvision_input_and_gives_the_same_scores(tmp_path, size):
    """[N, 3, H, W] floats 0..1 normalised with the ImageNet mean and std (torchvision's
    ToTensor + Normalize, written out here from torchvision's documented constants) ->
    {"out": [N, C, H, W]} equal to the default export's scores, transposed, at odd sizes."""
    from segmodel import exported as exported_lib
    model = fcn.build_fcn("fcn8s", 4, **TINY)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()])
    h, w = size
    pixels = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    fcn.export_model(model, str(tmp_path / "model.keras"))
    fcn.export_model(model, str(tmp_path / "nchw.keras"), layout="nchw")
    expected = np.asarray(keras.models.load_model(tmp_path / "model.keras")(pixels))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch_input = ((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype("float32")  # [2, 3, h, w]
    nchw = keras.models.load_model(tmp_path / "nchw.keras")
    out = nchw(torch_input)
    assert set(out) == {"out"} and out["out"].shape == (2, 4, h, w)
    np.testing.assert_allclose(np.asarray(out["out"]), expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=2e-4)
    # every consumer in the project (evaluation, batch segmentation, report) sees the nhwc interface
    unwrapped = exported_lib.load_exported(str(tmp_path / "nchw.keras"))
    np.testing.assert_array_equal(np.asarray(unwrapped(pixels)), expected)
