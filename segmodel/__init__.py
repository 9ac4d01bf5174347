"""segmodel: FCN semantic segmentation in TensorFlow/Keras, with no Beam inside.

Importing the package registers the custom layers, so ``keras.models.load_model`` reads an
exported ``MODEL/model.keras`` once ``segmodel`` is imported.
"""
from segmodel import layers as _layers  # noqa: F401  (registers the custom layers)
from segmodel import losses as _losses  # noqa: F401  (registers the loss and metrics)
from segmodel import metrics as _metrics  # noqa: F401
