"""segmodel: FCN semantic segmentation in TensorFlow/Keras, with no Beam inside.

Importing the package costs nothing. ``tiling`` and ``architectures`` load no TensorFlow (the
dataset jobs and the command line use them), nor do ``preprocess``'s constants and ``predict``'s
chunk geometry (each says why its TensorFlow imports sit inside functions); the other modules
import TensorFlow and Keras at the top. Keras's loader finds the custom
layers, loss and metric once ``segmodel.exported.register_custom_objects()`` has run; loading
through ``segmodel.exported.load_exported`` does that itself.
"""
