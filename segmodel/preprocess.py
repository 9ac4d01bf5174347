"""The one place normalisation lives, and the paired image/mask transforms for training.

Normalisation runs *inside* the exported model (``segmodel.layers.Normalize``), so callers pass
RGB pixels 0..255 and cannot get it wrong. Two conventions:

* ``"imagenet"`` (default): pixels scaled to 0..1, minus the ImageNet mean, over its std
  (torchvision's convention). Used when the backbone is trained from scratch (``none``).
* ``"caffe"``: RGB -> BGR and the ImageNet mean pixel subtracted, no scaling. Keras's VGG16
  ImageNet weights were trained this way (``keras.applications.vgg16.preprocess_input``), so
  it is used whenever those weights are loaded (``--backbone_weights imagenet`` or a file).

Masks are only ever resized with nearest neighbour and padded with 255 (ignore).

TensorFlow and Keras are imported inside the transforms: the command line reads this module's
constants (``NORMALIZATIONS``) and ``normalization_for`` without loading them.
"""
from __future__ import annotations

from segformat.masks import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
NORMALIZATIONS = ("imagenet", "caffe")


def normalization_for(backbone_weights: str) -> str:
    """Which convention the backbone's weights expect."""
    return "imagenet" if backbone_weights in (None, "", "none") else "caffe"


def normalize(images, mode: str):
    """RGB 0..255 [..., 3] -> the model's input convention (backend-agnostic ops)."""
    from keras import ops
    if mode == "imagenet":
        mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype=images.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, dtype=images.dtype)
        return (images / 255.0 - mean) / std
    if mode == "caffe":
        mean = ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=images.dtype)
        return ops.flip(images, axis=-1) - mean
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")


# --- paired training transforms (tf.data) ---------------------------------------------------

def _nearest_sources(n_in, n_out, first, count):
    """Source index of output pixels first .. first + count - 1 when n_in pixels are resized to
    n_out with nearest neighbour (tf.image.resize's half-pixel rule: floor((i + 0.5) * in / out));
    positions at or past n_out get n_in, one past the source (where callers keep a padding row)."""
    import tensorflow as tf
    position = first + tf.range(count)
    ratio = tf.cast(n_in, tf.float32) / tf.cast(n_out, tf.float32)
    source = tf.minimum(tf.cast(tf.floor((tf.cast(position, tf.float32) + 0.5) * ratio), tf.int32), n_in - 1)
    return tf.where(position < n_out, source, n_in)


def _gather_pixels(mask, rows, cols):
    """mask [H, W, 1] -> mask[rows][:, cols]. Both gathers run on rows of a 2-D label map (the
    columns through a transpose): tf.gather along axis 1 copies one byte per call and is ~4x
    slower than two whole-row gathers and two transposes."""
    import tensorflow as tf
    picked = tf.gather(mask[:, :, 0], rows, axis=0)
    return tf.transpose(tf.gather(tf.transpose(picked), cols, axis=0))[:, :, None]


# Uniform numbers one crop draws: the window's scale and offset (3), flip and colour jitter (4).
WINDOW_DRAWS, RESAMPLE_DRAWS = 3, 4


def draws(n: int, seed=None):
    """``n`` uniform numbers in [0, 1) for one example's augmentation: stateless from ``seed`` (a
    [2] integer tensor), so the example's crop is a function of its seed whichever thread makes
    it (repeatable runs; and under TensorFlow's op determinism a map of stateless ops still runs
    in parallel, where stateful random ops would serialise it), or from TensorFlow's global
    generator when ``seed`` is None."""
    import tensorflow as tf
    if seed is None:
        return tf.random.uniform([n])
    return tf.random.stateless_uniform([n], seed=seed)


def _colour_jitter(image, strength: float, uniform):
    """Mild saturation, contrast and brightness changes as one 3x3 colour matrix and an offset
    (all three are linear in RGB: one pass over the pixels instead of tf.image's HSV round trip).
    ``uniform``: three numbers in [0, 1). No clipping here: resample_window clips the crop
    to 0..255 after resizing (the matrix is applied to the smaller source patch; linear maps
    commute with bilinear resampling)."""
    import tensorflow as tf
    # each factor uniform in 1 +- 0.1 * strength (brightness: +- 0.1 * strength of the range)
    saturation, contrast, brightness = tf.unstack(1 + 0.1 * strength * (2 * uniform - 1))
    brightness = (brightness - 1) * 255.0
    luma = tf.constant([[0.299, 0.587, 0.114]])
    # saturation: x -> grey + s (x - grey); contrast: x -> mean + c (x - mean); then + brightness
    colour = contrast * (saturation * tf.eye(3) + (1 - saturation) * tf.ones([3, 1]) * luma)
    # the mean level contrast scales around: the mean of all values, a full reduction (per-channel
    # or luma-weighted means reduce along strided axes and cost more than the colour matrix)
    mean = tf.reduce_mean(image)
    offset = (1 - contrast) * mean + brightness
    return tf.tensordot(image, tf.transpose(colour), 1) + offset


def crop_window(size, crop_height: int, crop_width: int, min_scale: float, max_scale: float, uniform) -> dict:
    """Draws a random scale and crop position for an image of ``size`` [2] (int32): the scale,
    the crop's offset in the scaled image, and the source rows/columns [start, stop) it needs
    (one pixel wider for the bilinear taps). Needs only the size, so a JPEG can be decoded for
    just that window (``segmodel.dataset``). ``uniform``: WINDOW_DRAWS numbers from ``draws``."""
    import tensorflow as tf
    scale = min_scale + (max_scale - min_scale) * uniform[0]
    crop = tf.constant([crop_height, crop_width], tf.int32)
    scaled = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    room = tf.maximum(scaled - crop, 0)
    offset = tf.cast(tf.floor(uniform[1:] * tf.cast(room + 1, tf.float32)), tf.int32)
    start = tf.cast(tf.floor(tf.cast(offset, tf.float32) / scale), tf.int32)
    stop = tf.minimum(size, tf.cast(tf.math.ceil(tf.cast(offset + crop, tf.float32) / scale), tf.int32) + 1)
    return {"scale": scale, "offset": offset, "start": start, "stop": stop}


def resample_window(patch, mask_patch, window: dict, crop_height: int, crop_width: int, flip: bool = True,
                    jitter: float = 0.0, *, uniform):
    """The source window of ``crop_window`` (uint8 image and mask) -> the crop: random scale,
    crop, optional horizontal flip, colour jitter and padding (``segmodel.dataset`` decodes just
    the window and calls this). The image is resampled bilinearly, the mask with nearest
    neighbour on the same grid, so the two stay aligned; where the scaled image is smaller than
    the crop, the image is padded with 0 and the mask with 255 (ignore). At scale 1 the crop
    copies pixels exactly.

    Costs are kept at the crop's size whatever the scale (scaling a whole 640x480 photo by 2 to
    keep a 512x512 crop of it would resample four times the pixels):
    * the source patch under the crop is cut first and converted to float32 before resizing
      (TensorFlow's bilinear kernel is about twice as fast on float32 input as on uint8);
    * the colour jitter is linear, and bilinear weights sum to one, so its matrix is applied to
      the patch before resizing (fewer pixels at scales above 1) and only the clip to 0..255
      runs on the crop: the result is jittering the crop, except that the contrast's mean level
      is taken over the source patch;
    * the mask is gathered straight into the crop with one padding row and column of 255, no
      intermediate resized mask and no pad pass.

    ``uniform``: RESAMPLE_DRAWS numbers from ``draws``, the flip's and the colour jitter's three."""
    import tensorflow as tf
    scale, offset, start, stop = window["scale"], window["offset"], window["start"], window["stop"]
    if flip:
        flipped = uniform[0] < 0.5
        patch = tf.cond(flipped, lambda: tf.reverse(patch, [1]), lambda: patch)
        mask_patch = tf.cond(flipped, lambda: tf.reverse(mask_patch, [1]), lambda: mask_patch)
    patch = tf.cast(patch, tf.float32)
    if jitter > 0:
        patch = _colour_jitter(patch, jitter, uniform[1:])
    extent = stop - start
    target = tf.maximum(tf.cast(tf.round(tf.cast(extent, tf.float32) * scale), tf.int32), 1)
    shift = tf.clip_by_value(offset - tf.cast(tf.round(tf.cast(start, tf.float32) * scale), tf.int32), 0, target - 1)
    patch = tf.image.resize(patch, target, method="bilinear")
    patch = patch[shift[0]:shift[0] + crop_height, shift[1]:shift[1] + crop_width]
    pad = tf.constant([crop_height, crop_width], tf.int32) - tf.shape(patch)[:2]
    patch = tf.pad(patch, [[0, pad[0]], [0, pad[1]], [0, 0]], constant_values=0.0)
    if jitter > 0:
        patch = tf.clip_by_value(patch, 0.0, 255.0)
    mask_patch = tf.pad(mask_patch, [[0, 1], [0, 1], [0, 0]], constant_values=IGNORE_INDEX)
    rows = _nearest_sources(extent[0], target[0], shift[0], crop_height)
    cols = _nearest_sources(extent[1], target[1], shift[1], crop_width)
    mask_patch = _gather_pixels(mask_patch, rows, cols)
    return (tf.ensure_shape(patch, [crop_height, crop_width, 3]),
            tf.ensure_shape(tf.cast(mask_patch, tf.uint8), [crop_height, crop_width, 1]))
