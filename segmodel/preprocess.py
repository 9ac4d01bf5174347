"""The one place normalisation lives, and the paired image/mask transforms for training.

Normalisation runs *inside* the exported model (``segmodel.layers.Normalize``), so callers pass
RGB pixels 0..255 and cannot get it wrong. Two conventions:

* ``"imagenet"`` (default): pixels scaled to 0..1, minus the ImageNet mean, over its std
  (torchvision's convention). Used when the backbone is trained from scratch (``none``).
* ``"caffe"``: RGB -> BGR and the ImageNet mean pixel subtracted, no scaling. Keras's VGG16
  ImageNet weights were trained this way (``keras.applications.vgg16.preprocess_input``), so
  it is used whenever those weights are loaded (``--backbone_weights imagenet`` or a file).

Masks are only ever resized with nearest neighbour and padded with 255 (ignore).
"""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
NORMALIZATIONS = ("imagenet", "caffe")
IGNORE_INDEX = 255


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

def random_scale(image, mask, min_scale: float, max_scale: float):
    import tensorflow as tf
    scale = tf.random.uniform([], min_scale, max_scale)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
    size = tf.maximum(size, 1)
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask, size, method="nearest")
    return image, tf.cast(mask, tf.uint8)


def pad_and_random_crop(image, mask, crop_height: int, crop_width: int):
    """Pads to at least the crop size (image with 0, mask with 255), then crops both at one offset."""
    import tensorflow as tf
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    pad_h, pad_w = tf.maximum(crop_height - height, 0), tf.maximum(crop_width - width, 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=0.0)
    mask = tf.pad(mask, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=IGNORE_INDEX)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    top = tf.random.uniform([], 0, height - crop_height + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, width - crop_width + 1, dtype=tf.int32)
    image = image[top:top + crop_height, left:left + crop_width]
    mask = mask[top:top + crop_height, left:left + crop_width]
    return tf.ensure_shape(image, [crop_height, crop_width, 3]), tf.ensure_shape(mask, [crop_height, crop_width, 1])


def random_flip(image, mask):
    import tensorflow as tf
    flip = tf.random.uniform([]) < 0.5
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask))


def photometric_jitter(image, strength: float = 1.0):
    """Mild brightness / contrast / saturation changes on a float 0..255 image."""
    import tensorflow as tf
    if strength <= 0:
        return image
    image = image / 255.0
    image = tf.image.random_brightness(image, 0.1 * strength)
    image = tf.image.random_contrast(image, 1 - 0.1 * strength, 1 + 0.1 * strength)
    image = tf.image.random_saturation(image, 1 - 0.1 * strength, 1 + 0.1 * strength)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def augment(image, mask, crop_size, min_scale=0.5, max_scale=2.0, jitter=1.0):
    """uint8 image [H, W, 3], uint8 mask [H, W, 1] -> float image and uint8 mask at crop_size."""
    import tensorflow as tf
    image = tf.cast(image, tf.float32)
    if (min_scale, max_scale) != (1.0, 1.0):
        image, mask = random_scale(image, mask, min_scale, max_scale)
    image, mask = pad_and_random_crop(image, mask, crop_size[0], crop_size[1])
    image, mask = random_flip(image, mask)
    return photometric_jitter(image, jitter), mask
