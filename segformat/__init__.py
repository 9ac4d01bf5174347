"""segformat: the formats both stages share, with neither TensorFlow nor Beam inside.

* ``segformat.masks``: COCO annotations -> one per-pixel class mask (docs/datasets.md,
  mask semantics: pycocotools rasterization, crowds, overlaps, class tables);
* ``segformat.records``: the tf.train.Example keys of a segmentation record and its encoding;
* ``segformat.label_studio``: Label Studio's brush RLE, tasks, labeling config and exports;
* ``segformat.limits``: the decoded-image size every job refuses above.

Kept apart from ``segmodel`` (whose model, training and loading modules load TensorFlow) so
the dataset pipelines' workers start in about a second instead of five and stay ~1 GB smaller.
"""
