"""FCN-8s / 16s / 32s on VGG16 (Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015 / PAMI 2017).

``build_fcn(arch, num_classes)`` returns a ``keras.Model`` that takes RGB pixels 0..255 of any
height and width and returns per-pixel class scores (logits, float32) [N, H, W, C]:

    Normalize -> PadToMultiple(32) -> VGG16 conv blocks 1-5 -> fc6 (7x7, 4096) -> fc7 (1x1, 4096)
    -> score_fr (1x1) -> 2x up -> + score_pool4 (pool4 x 0.01) -> 2x up
    -> + score_pool3 (pool3 x 0.0001) -> 8x up -> CropLike(input)

The skip inputs are scaled as in the paper's all-at-once FCN-8s, the score layers start at zero
and every upsampling starts as bilinear interpolation, so the untrained net is a smooth
upsampling of fc7's scores and training is stable from the first step. The 2x upsamplings are
learned, the final one stays bilinear (as in the paper).
"""
from __future__ import annotations

import logging
import warnings

import keras
import numpy as np
from keras import layers
from keras.applications import VGG16

from segmodel.architectures import ARCHS, INFERENCE_PRECISIONS, LAYOUTS
from segmodel.exported import save_atomic
from segmodel.layers import BilinearInitializer, ChannelsFirst, CropLike, FromTorchvision, Normalize, PadToMultiple
from segmodel.preprocess import normalization_for

LOG = logging.getLogger(__name__)
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
STRIDE = 32


def _upsample(x, num_classes, factor, name, trainable=True):
    return layers.Conv2DTranspose(num_classes, kernel_size=2 * factor, strides=factor, padding="same",
                                  use_bias=False, kernel_initializer=BilinearInitializer(), trainable=trainable,
                                  name=name)(x)


def _fuse_skip(score, pool, scale: float, name: str):
    """score + a zero-initialised 1x1 class-score layer on the scaled pooling output ``pool``."""
    num_classes = score.shape[-1]
    skip = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{name}")(
        layers.Rescaling(scale, name=f"scale_{name}")(pool))
    return layers.Add(name=f"fuse_{name}")([score, skip])


def build_fcn(arch: str = "fcn8s", num_classes: int = 21, *, width: float = 1.0, fc_units: int = 4096,
              fc6_kernel: int = 7, dropout: float = 0.5, batch_norm: bool = False, skip_scales=(0.01, 0.0001),
              normalization: str | None = None,
              backbone_weights: str = "none", name: str | None = None) -> keras.Model:
    """The FCN. ``width`` scales every VGG16 conv layer (1.0 is the paper's net; the tiny CPU
    configuration uses 1/8); ``fc_units`` is fc6/fc7's width (4096 in the paper).
    ``backbone_weights``: ``none``, ``imagenet`` (Keras's VGG16 weights, downloaded once into
    ~/.keras/models) or the path to a Keras VGG16 weights file. ``normalization`` (None: what the
    weights expect, ``segmodel.preprocess.normalization_for``) must agree with loaded weights: VGG16's
    ImageNet weights were trained on ``caffe`` inputs, and any other normalisation is refused."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    expected = normalization_for(backbone_weights)
    if normalization is None:
        normalization = expected
    elif backbone_weights not in (None, "", "none") and normalization != expected:
        raise ValueError(f"normalization {normalization!r} contradicts the backbone weights {backbone_weights!r}, "
                         f"which expect {expected!r}")
    images = keras.Input(shape=(None, None, 3), name="images")
    x = Normalize(normalization, name="normalize")(images)
    x = PadToMultiple(STRIDE, name="pad_to_stride")(x)
    pools = []
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(max(8, int(round(filters * width))), 3, padding="same",
                              activation=None if batch_norm else "relu", kernel_initializer="he_normal",
                              name=f"block{block}_conv{conv}")(x)
            if batch_norm:
                # momentum 0.97: moving statistics that settle within the ~150 steps of a CPU smoke run
                # yet average ~30 batches, so validation scores do not jump from epoch to epoch.
                x = layers.BatchNormalization(momentum=0.97, name=f"block{block}_bn{conv}")(x)
                x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        pools.append(x)
    pool3, pool4 = pools[2], pools[3]
    x = layers.Conv2D(fc_units, fc6_kernel, padding="same", activation="relu", kernel_initializer="he_normal",
                      name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc_units, 1, activation="relu", kernel_initializer="he_normal", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_fr")(x)

    if arch == "fcn32s":
        score = _upsample(score, num_classes, 32, "upscore32", trainable=False)
    else:
        score = _fuse_skip(_upsample(score, num_classes, 2, "upscore2"), pool4, skip_scales[0], "pool4")
        if arch == "fcn16s":
            score = _upsample(score, num_classes, 16, "upscore16", trainable=False)
        else:
            score = _fuse_skip(_upsample(score, num_classes, 2, "upscore_pool4"), pool3, skip_scales[1], "pool3")
            score = _upsample(score, num_classes, 8, "upscore8", trainable=False)
    score = CropLike(name="crop_to_input")(score, images)
    # float32 scores even under a mixed-precision policy: softmax and the loss need the range.
    scores = layers.Activation("linear", dtype="float32", name="scores")(score)
    model = keras.Model(images, scores, name=name or arch)
    if backbone_weights not in (None, "", "none"):
        load_vgg16_weights(model, backbone_weights)
    return model


def _keras_vgg16(weights: str):
    """Keras's own VGG16 with ``weights`` ("imagenet" or a file), with the classifier if the
    weights have it (so fc6/fc7 can start from it, as in the paper), else without."""
    if weights == "imagenet":
        # Keras downloads (once, into ~/.keras/models, hash-checked) the classifier weights.
        return VGG16(include_top=True, weights="imagenet")
    # Try with the classifier first. On a file without it Keras warns that layers "retain their
    # freshly-initialized weights" before it raises; that warning belongs to the failed probe,
    # so it is kept back and only re-issued if the probe succeeds.
    with warnings.catch_warnings(record=True) as probe_warnings:
        warnings.simplefilter("always")
        try:
            model, first = VGG16(include_top=True, weights=weights), None
        except (ValueError, KeyError) as error:
            model, first = None, error
    if first is None:
        for warning in probe_warnings:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return model
    try:
        return VGG16(include_top=False, weights=weights, input_shape=(None, None, 3))
    except (ValueError, KeyError):
        raise ValueError(f"{weights} is not a Keras VGG16 weights file: {first}") from None


def transfer_vgg16_weights(source: keras.Model, model: keras.Model) -> list:
    """Copies conv weights from Keras's VGG16 into the FCN by layer name, and fc1/fc2 into fc6/fc7
    reshaped as convolutions (Keras flattens pool5 in H, W, C order, which is the 7x7x512 kernel
    order). Returns the names of the FCN layers that were loaded."""
    loaded = []
    for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            name = f"block{block}_conv{conv}"
            target = model.get_layer(name)
            weights = source.get_layer(name).get_weights()
            if weights[0].shape != tuple(target.kernel.shape):
                raise ValueError(f"{name}: weights {weights[0].shape} do not fit {tuple(target.kernel.shape)}; "
                                 "ImageNet weights need width=1.0")
            target.set_weights(weights)
            loaded.append(name)
    names = {layer.name for layer in source.layers}
    for src, dst in (("fc1", "fc6"), ("fc2", "fc7")):
        target = model.get_layer(dst)
        if src not in names:
            continue
        kernel, bias = source.get_layer(src).get_weights()
        shape = tuple(target.kernel.shape)
        if int(np.prod(shape)) != kernel.size:
            LOG.warning("%s does not match %s %s; %s starts from random weights", src, dst, shape, dst)
            continue
        target.set_weights([kernel.reshape(shape), bias])
        loaded.append(dst)
    return loaded


def load_vgg16_weights(model: keras.Model, weights: str) -> list:
    loaded = transfer_vgg16_weights(_keras_vgg16(weights), model)
    LOG.info("loaded VGG16 weights (%s) into %s", weights, ", ".join(loaded))
    return loaded


def export_model(model: keras.Model, path: str, layout: str = "nhwc") -> keras.Model:
    """Saves the inference model to ``path`` (a .keras file).

    ``nhwc`` (default): RGB pixels 0..255 [N, H, W, 3] (uint8 or float) -> scores [N, H, W, C].
    ``nchw``: torchvision's interface: [N, 3, H, W] floats scaled to 0..1 and normalised with the
    ImageNet mean and std -> ``{"out": [N, C, H, W]}``, any height and width, scores at the
    input's size. The nchw model wraps the nhwc one (FromTorchvision first, ChannelsFirst last),
    so both compute the same scores; ``segmodel.exported.load_exported`` unwraps it again."""
    inference = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    if layout == "nhwc":
        exported = inference
    elif layout == "nchw":
        pixels = keras.Input((3, None, None), name="pixel_values")
        scores = inference(FromTorchvision(name="from_torchvision")(pixels))
        exported = keras.Model(pixels, {"out": ChannelsFirst(name="out")(scores)}, name=f"{model.name}_nchw")
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    save_atomic(exported, path)
    return exported


def with_precision(model: keras.Model, precision: str = "float32") -> keras.Model:
    """The same network and weights computing in ``precision``: ``float32`` (returns ``model``) or
    ``bfloat16`` (Keras's mixed_bfloat16: bf16 matmuls and convolutions, float32 variables and
    float32 scores). On CPUs with AVX512-BF16 or AMX this runs the FCN ~2x faster."""
    if precision in ("float32", "", None):
        return model
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
    config = model.get_config()
    outputs = {entry[0] for entry in _output_entries(config["output_layers"])}
    for layer in config["layers"]:
        # Inputs stay as given; the output layers stay float32 (softmax and argmax on the scores).
        if layer["class_name"] != "InputLayer" and layer["config"].get("name") not in outputs:
            layer["config"]["dtype"] = "mixed_bfloat16"
    converted = keras.Model.from_config(config)
    converted.set_weights(model.get_weights())
    return converted


def _output_entries(output_layers):
    """[name, node, tensor] entries of a functional config's output_layers, however nested."""
    if isinstance(output_layers, dict):
        output_layers = list(output_layers.values())
    if output_layers and isinstance(output_layers[0], str):
        return [output_layers]
    return [entry for item in output_layers for entry in _output_entries(item)]
