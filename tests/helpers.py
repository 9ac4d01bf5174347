"""Small readers used by several tests: TFRecord shards -> parsed records."""
from __future__ import annotations

import glob
import io

import numpy as np
from PIL import Image


def read_records(pattern: str) -> dict:
    """{source_id: {key: value}} from shards matching ``pattern`` (local), parsed by plain TF."""
    import tensorflow as tf
    from segmodel import features as F
    out = {}
    files = sorted(glob.glob(pattern))
    for raw in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(raw, F.feature_spec())
        record = {k: v.numpy() for k, v in parsed.items()}
        record["mask"] = np.asarray(Image.open(io.BytesIO(record[F.MASK_ENCODED])))
        out[record[F.IMAGE_SOURCE_ID].decode()] = record
    return out
