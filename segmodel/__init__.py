"""segmodel: FCN semantic segmentation in TensorFlow/Keras, with no Beam inside.

Importing the package costs nothing: each module loads what it needs (``segmodel.tiling`` is
NumPy only, so the dataset jobs use it without TensorFlow). Keras's loader finds the custom
layers, loss and metric once ``segmodel.exported.register_custom_objects()`` has run; loading
through ``segmodel.exported.load_exported`` does that itself.
"""
