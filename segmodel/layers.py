"""Custom layers and initializers of the FCN, registered with Keras on import so that
``keras.models.load_model("MODEL/model.keras")`` works once ``segmodel.exported.register_custom_objects()`` ran."""
from __future__ import annotations

import numpy as np
import keras
from keras import ops

from segmodel.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize

PACKAGE = "segmodel"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Normalize(keras.layers.Layer):
    """RGB 0..255 (uint8 or float) -> the backbone's input convention; see segmodel.preprocess."""

    def __init__(self, mode: str = "imagenet", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, images):
        return normalize(ops.cast(images, self.compute_dtype), self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width at the bottom/right up to a multiple (the network's stride),
    so any input size works; ``CropLike`` undoes it on the scores."""

    def __init__(self, multiple: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        padded = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        if x.shape[-1] is not None:
            # A pad by computed amounts has no static shape for TFLite's converter, whose
            # convolutions need the channels (CONV_2D, not a Flex op): a reshape (no copy) names them.
            padded = ops.reshape(padded, (shape[0], shape[1] + pad_h, shape[2] + pad_w, x.shape[-1]))
        return padded

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropLike(keras.layers.Layer):
    """Crops ``x`` to the height and width of ``reference`` (top-left aligned)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelsFirst(keras.layers.Layer):
    """[N, H, W, C] -> [N, C, H, W], for the torchvision-style export."""

    def call(self, x):
        return ops.transpose(x, (0, 3, 1, 2))

    def compute_output_shape(self, shape):
        return (shape[0], shape[3], shape[1], shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FromTorchvision(keras.layers.Layer):
    """torchvision's input convention -> this project's: [N, 3, H, W] floats scaled to 0..1 and
    normalised with the ImageNet mean and std (``transforms.ToTensor`` + ``transforms.Normalize``)
    -> [N, H, W, 3] RGB 0..255, which the FCN's own Normalize layer then takes. The ``nchw``
    export starts with it, so the network and its normalisation stay one path."""

    def call(self, x):
        x = ops.transpose(ops.cast(x, self.compute_dtype), (0, 2, 3, 1))
        mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype=x.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, dtype=x.dtype)
        return (x * std + mean) * 255.0

    def compute_output_shape(self, shape):
        return (shape[0], shape[2], shape[3], shape[1])


def bilinear_kernel(kernel_size: int, channels: int) -> np.ndarray:
    """The FCN paper's bilinear upsampling filter as a Conv2DTranspose kernel
    [k, k, out=channels, in=channels], channel i feeding only channel i."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    kernel = np.zeros((kernel_size, kernel_size, channels, channels), dtype=np.float32)
    for i in range(channels):
        kernel[:, :, i, i] = filt
    return kernel


@keras.saving.register_keras_serializable(package=PACKAGE)
class BilinearInitializer(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None):
        if shape[0] != shape[1] or shape[2] != shape[3]:
            raise ValueError(f"bilinear init needs a square kernel with in == out channels, got {shape}")
        return ops.convert_to_tensor(bilinear_kernel(shape[0], shape[2]), dtype=dtype or "float32")

    def get_config(self):
        return {}
