"""What several test modules share: reading shards back, the GCS emulator and Dataflow template
helpers, an independent transcription of torchvision's COCO mask rule."""
from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


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


def staged_pipeline_transforms(template: Path) -> set:
    """Transform names of the Beam pipeline proto a Dataflow template points at (read from GCS)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.portability.api import beam_runner_api_pb2
    job = json.loads(template.read_text())
    url = job["environment"]["sdkPipelineOptions"]["options"].get("pipelineUrl") or \
        json.dumps(job).split('"pipelineUrl": "')[1].split('"')[0]
    with FileSystems.open(url) as handle:
        proto = beam_runner_api_pb2.Pipeline.FromString(handle.read())
    packages = [p["name"] for p in job["environment"]["workerPools"][0]["packages"]]
    assert "workflow.tar.gz" in packages  # --setup_file ./setup.py was staged for the workers
    return {t.unique_name for t in proto.components.transforms.values()}


def dataflow_args(bucket, tmp_path):
    root = Path(__file__).resolve().parents[1]
    return ["--runner", "DataflowRunner", "--project", "segpipe-test-project", "--region", "us-central1",
            "--temp_location", f"gs://{bucket}/tmp", "--setup_file", str(root / "setup.py"),
            "--template_location", str(tmp_path / "template.json")]


def upload_tree(local: Path, gs_prefix: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    for path in sorted(local.rglob("*")):
        if path.is_file():
            with FileSystems.create(f"{gs_prefix}/{path.relative_to(local).as_posix()}") as handle:
                handle.write(path.read_bytes())


def torchvision_rule(h, w, anns, category_index):
    """torchvision references/segmentation/coco_utils.py (FilterAndRemapCocoCategories +
    ConvertCocoPolysToMask), written out in NumPy."""
    anns = [a for a in anns if a["category_id"] in category_index]
    if not anns:
        return np.zeros((h, w), np.uint8)
    masks = []
    for a in anns:
        decoded = mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], h, w))
        if decoded.ndim < 3:
            decoded = decoded[..., None]
        masks.append(decoded.any(axis=2))
    masks = np.stack(masks).astype(np.uint8)
    cats = np.array([category_index[a["category_id"]] for a in anns], np.uint8)
    target = (masks * cats[:, None, None]).max(axis=0)
    target[masks.sum(0) > 1] = 255
    return target


def training_crop(image, mask, crop_size, min_scale=0.5, max_scale=2.0, jitter=1.0, seed=None):
    """A decoded image and mask -> one training crop, through the pieces segmodel.dataset uses
    (draws, crop_window, resample_window), without its JPEG window decode."""
    import tensorflow as tf

    from segmodel import preprocess
    uniform = preprocess.draws(preprocess.WINDOW_DRAWS + preprocess.RESAMPLE_DRAWS, seed)
    window = preprocess.crop_window(tf.shape(image)[:2], crop_size[0], crop_size[1], min_scale, max_scale,
                                    uniform[:preprocess.WINDOW_DRAWS])
    start, stop = window["start"], window["stop"]
    return preprocess.resample_window(image[start[0]:stop[0], start[1]:stop[1]], mask[start[0]:stop[0], start[1]:stop[1]],
                                      window, crop_size[0], crop_size[1], jitter=jitter,
                                      uniform=uniform[preprocess.WINDOW_DRAWS:])


POINTWISE_NAMES = ["background", "road", "building", "water"]


def make_pointwise_model(model_dir: Path):
    """A position-independent model (1x1 convolutions only) with the exported model's interface,
    exported into model_dir with its classes.json: (model_dir, model)."""
    import keras

    from segmodel import fcn, layers
    images = keras.Input((None, None, 3))
    x = layers.Normalize("imagenet")(images)
    x = keras.layers.Conv2D(16, 1, activation="relu", kernel_initializer=keras.initializers.RandomNormal(seed=1))(x)
    scores = keras.layers.Conv2D(4, 1, kernel_initializer=keras.initializers.RandomNormal(seed=2),
                                 bias_initializer=keras.initializers.Constant([0.5, 0.0, 0.0, 0.0]))(x)
    model = keras.Model(images, scores)
    fcn.export_model(model, str(model_dir / "model.keras"))
    (model_dir / "classes.json").write_text(json.dumps(
        {"ignore_index": 255, "classes": [{"index": i, "name": n} for i, n in enumerate(POINTWISE_NAMES)]}))
    return model_dir, model


COLOR_NAMES = ["background", "road", "building", "water"]


def make_color_model(model_dir: Path) -> Path:
    """A real exported Keras model whose classes follow the colour: road where red dominates,
    building where green does, water where blue does, background where none passes 128."""
    import keras

    from segmodel import fcn
    images = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 1, kernel_initializer=keras.initializers.Constant(
        np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)[None, None]),
        bias_initializer=keras.initializers.Constant([128.0, 0, 0, 0]))
    fcn.export_model(keras.Model(images, conv(keras.layers.Rescaling(1.0)(images))), str(model_dir / "model.keras"))
    (model_dir / "classes.json").write_text(json.dumps({"classes": [{"index": i, "name": n}
                                                                    for i, n in enumerate(COLOR_NAMES)]}))
    return model_dir


def free_ports(n: int) -> list:
    """``n`` distinct free TCP ports on 127.0.0.1 (for servers and training workers a test starts)."""
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
