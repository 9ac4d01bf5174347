"""The Beam jobs and what they share.

Entry points at the top, each ``run(argv=None, test_pipeline=None)`` (``python -m pipelines.<job>``,
or ``segpipe <command>``): ``coco_to_tfrecord``, ``masks_to_tfrecord``, ``raster_to_tfrecord``,
``labelstudio_to_tfrecord`` (datasets), ``batch_segment`` (batch segmentation), ``review`` (a
labeling batch), ``report`` (the HTML report), ``demo`` (everything on generated data). They
build their pipelines from the library folders and never import each other:

* ``dataset/``: the shard writer and manifest commit, the COCO builder, colour tables and pairing,
  the split rule;
* ``segment/``: batch segmentation's chunks, model handler and outputs;
* ``common/``: the runner, storage (read-ahead, atomic writes), image checks, GeoTIFFs, palette;
* ``labeling/``: the labeling loop's round; ``demo_world/``: the demo's generated scenes.
"""
