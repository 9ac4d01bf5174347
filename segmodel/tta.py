"""Test-time augmentation: a model's class probabilities averaged over mirrored and rescaled
views of each image (the multi-scale and flip inference of DeepLab and its successors).

``with_test_time_augmentation(model, scales, flip)`` returns a model with the project's
interface (RGB 0..255 [N, H, W, 3] -> scores [N, H, W, C]) that runs ``model`` on every view:
the image resized by each of ``scales`` (bilinear; 1 is the image itself) and, with ``flip``,
each of those mirrored left to right. Each view's scores are mirrored back, resized back to the
image's size (bilinear on the scores, as the FCN's own last upsampling is) and turned into
probabilities; the views' probabilities are averaged and the model returns their logarithm, so
that softmax, argmax, confidence and entropy downstream (evaluation, batch segmentation's blend)
read the averaged probabilities unchanged. A net of stride 8 sees a 4-pixel pole as 5 pixels at
scale 1.25: upscaled views are what thin classes gain from; the views cost their pixels in
compute (1, 1.25 and flips: 5.1x a single view).

Nothing here is saved with a model: evaluation and batch segmentation wrap the loaded model
when ``--tta_scales``/``--tta_flip`` ask for it (``segcli.tta``), and which views help is
chosen on validation frames, never on the test split.
"""
from __future__ import annotations

import keras

# A probability no view gave any weight (float32 softmax underflows to 0): log of it is -inf,
# which softmax downstream maps back to 0; the floor keeps the scores finite.
_FLOOR = 1e-30


class TestTimeAugmentation(keras.layers.Layer):
    """The averaged views of ``inner`` (see the module docstring). Not serialisable on purpose:
    it wraps a loaded model at inference and is never part of an exported one."""

    def __init__(self, inner, scales=(1.0,), flip: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.scales, self.flip = inner, tuple(float(s) for s in scales), bool(flip)

    def call(self, images):
        import tensorflow as tf
        images = tf.cast(images, tf.float32)
        size = tf.shape(images)[1:3]
        total, views = None, 0
        for scale in self.scales:
            scaled = images if scale == 1.0 else tf.image.resize(
                images, tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), "bilinear")
            for mirrored in ((False, True) if self.flip else (False,)):
                scores = self.inner(tf.reverse(scaled, [2]) if mirrored else scaled, training=False)
                scores = tf.cast(scores, tf.float32)
                if mirrored:
                    scores = tf.reverse(scores, [2])
                if scale != 1.0:
                    scores = tf.image.resize(scores, size, "bilinear")
                probabilities = tf.nn.softmax(scores, axis=-1)
                total = probabilities if total is None else total + probabilities
                views += 1
        return tf.math.log(tf.maximum(total / views, _FLOOR))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.inner.outputs[0].shape[-1],)


def with_test_time_augmentation(model: keras.Model, scales=(1.0,), flip: bool = False) -> keras.Model:
    """``model`` itself for the single view (scales (1,), no flip); otherwise a model of the same
    interface averaging the views (module docstring). ``model``: the NHWC interface
    (``segmodel.exported.load_exported`` gives it)."""
    scales = tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"test-time scales must be positive, got {scales}")
    if scales == (1.0,) and not flip:
        return model
    pixels = keras.Input((None, None, 3), name="pixels")
    scores = TestTimeAugmentation(model, scales, flip, name="test_time_augmentation")(pixels)
    return keras.Model(pixels, scores, name=f"{model.name}_tta")
