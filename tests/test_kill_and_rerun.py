"""Kill the dataset job (SIGKILL) at several points, re-run the same command: the result is the
same dataset, byte for byte, and at no point does a reader find a dataset that is not whole."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.demo_world import scenes as demo_data
from segmodel.exported import register_custom_objects

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers

pytestmark = pytest.mark.slow  # about a minute: a dozen runs of the job as a process
ROOT = Path(__file__).resolve().parents[1]


def dataset_state(out: Path) -> dict:
    """What a reader sees: the manifest (without the command line that made it, whose paths
    name the folder) and the bytes of every shard in the folder."""
    state = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".tfrecord"}
    if (out / "dataset.json").exists():
        manifest = json.loads((out / "dataset.json").read_text())
        state["dataset.json"] = {k: v for k, v in manifest.items() if k not in ("command", "options")}
    return state


def assert_whole_or_absent(out: Path):
    """Either no manifest (a reader of the folder stops with a clear error) or a manifest whose
    shards are exactly the shards in the folder, each of the size and CRC-32C it lists (checked
    with google-crc32c, not the job's own checksum code)."""
    import google_crc32c
    manifest = out / "dataset.json"
    if not manifest.exists():
        return
    listed = {s["file"]: (s["bytes"], s["crc32c"]) for split in json.loads(manifest.read_text())["splits"].values()
              for s in split["shards"]}
    present = {p.name: (p.stat().st_size, f"{google_crc32c.value(p.read_bytes()):08x}")
               for p in out.iterdir() if ".tfrecord" in p.name}
    assert present == listed


POINTS = {
    # while reading and converting: after start-up, before any shard is staged
    "converting": lambda out, elapsed: elapsed > 2.5 and not any((out / ".staging").glob("*")),
    # while a shard is being written into the staging folder
    "writing shards": lambda out, elapsed: any((out / ".staging").glob("*.tmp-*")),
    # all shards staged, the swap into the folder under way
    "committing": lambda out, elapsed: (out / ".staging/committing").exists(),
}


def test_killed_anywhere_the_rerun_gives_the_same_dataset(tmp_path):
    """The folder holds an older dataset (A: 3 shards per split) when a run making another (B: 2
    shards, --overwrite) is killed: at that moment a reader finds A whole, B whole or no manifest
    (a commit that kept A's manifest over B's shards would show), and the re-run gives B byte for
    byte as a run into a second folder made it."""
    import shutil
    annotations = demo_data.write_coco_dataset(str(tmp_path / "coco"), 1200, size=(192, 256), seed=9)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def command(out, shards):
        return [sys.executable, "-m", "pipelines.coco_to_tfrecord", "--annotations", annotations, "--images",
                str(tmp_path / "coco/images"), "--output_dir", str(out), "--val_fraction", "0.2", "--num_shards",
                str(shards), "--overwrite"]
    subprocess.run(command(tmp_path / "a", 3), check=True, capture_output=True, cwd=ROOT, env=env)
    subprocess.run(command(tmp_path / "b", 2), check=True, capture_output=True, cwd=ROOT, env=env)
    older, reference = dataset_state(tmp_path / "a"), dataset_state(tmp_path / "b")
    assert len(older) == 7 and len(reference) == 5  # 3 + 3 (2 + 2) shards and the manifest
    out = tmp_path / "out"
    hit = []
    for name, point in POINTS.items():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp_path / "a", out)
        process = subprocess.Popen(command(out, 2), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while process.poll() is None and not point(out, time.monotonic() - started):
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hit.append(name)
        process.wait()
        assert_whole_or_absent(out)
        assert dataset_state(out) in (older, reference) or not (out / "dataset.json").exists(), name
        subprocess.run(command(out, 2), check=True, capture_output=True, cwd=ROOT, env=env)
        assert dataset_state(out) == reference, name
        assert not list((out / ".staging").glob("*")) and not list(out.glob("*.tmp-*"))
        # the dataset and nothing else: no staging folder, no writer's temporary folder of the killed run
        assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".tfrecord")) == [
            "classes.json", "dataset.json", "errors.jsonl", "stats.json"], name
    print(f"killed while: {hit}")
    assert {"converting", "writing shards"} <= set(hit)


TRAIN_POINTS = {
    # mid-training: the backup holds at least one epoch, nothing is being saved
    "training": lambda model: (model / "backup/training_metadata.json").exists()
    and not list(model.glob("*.tmp-*")),
    # while the best model so far is being saved
    "saving best.keras": lambda model: bool(list(model.glob("best.tmp-*.keras"))),
    # while the final model is being exported
    "exporting model.keras": lambda model: bool(list(model.glob("model.tmp-*.keras"))),
}


def test_training_killed_anywhere_and_rerun_finishes_whole(demo_dataset, tmp_path):
    """SIGKILL while training, while saving the best model and while exporting, each followed by
    the same command: the last run finishes with every epoch in history.csv exactly once, no
    temporary file, and an exported model as good as the best epoch it logged."""
    import csv

    import keras

    from segmodel import evaluate
    model = tmp_path / "model"
    epochs = 5
    command = [sys.executable, "-m", "segmodel.train", "--train_data", str(demo_dataset), "--val_data",
               str(demo_dataset), "--model_dir", str(model), "--config", "tiny", "--epochs", str(epochs),
               "--steps_per_epoch", "3", "--image_size", "64", "--progress", "0"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    hit = []
    for name, point in TRAIN_POINTS.items():
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not point(model):
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hit.append(name)
        process.wait()
        for saved in ("model.keras", "best.keras"):  # whole or absent, at any moment
            if (model / saved).exists():
                keras.models.load_model(model / saved, compile=False)
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = list(csv.DictReader((model / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert not list(model.rglob("*.tmp-*"))
    best_logged = max(float(r["val_mean_iou"]) for r in rows)
    exported = keras.models.load_model(model / "model.keras")
    assert evaluate.evaluate(exported, str(demo_dataset))["mean_iou"] >= best_logged - 2e-3
    print(f"training killed while: {hit}")
    assert {"training", "saving best.keras"} <= set(hit)


def segment_outputs(out: Path) -> dict:
    """What a reader of a batch segmentation sees: every file but the Beam runner's records folder
    (the records name their own output folder: written as OUT, to compare two folders)."""
    return {p.relative_to(out).as_posix(): p.read_bytes().replace(str(out).encode(), b"OUT")
            for p in sorted(out.rglob("*")) if p.is_file() and not p.relative_to(out).as_posix().startswith(".records/")}


def same_outputs(got: dict, want: dict) -> list:
    """Names of files that differ: masks and images byte for byte; JSON documents value for value,
    floats to 1e-9 (per-input statistics are sums whose order follows how the model calls were
    batched, which a re-run with fewer inputs changes)."""
    import math

    def close(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return a == b

    def parsed(name, data):
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in data.decode().splitlines()]
        document = json.loads(data)
        if name == "labels_coco.json":  # its annotation array is in the order the workers finished
            document["annotations"].sort(key=lambda a: a["id"])
        return document
    if sorted(got) != sorted(want):
        return sorted(set(got) ^ set(want))
    return [name for name in want if (got[name] != want[name] if not name.endswith((".json", ".jsonl"))
                                      else not close(parsed(name, got[name]), parsed(name, want[name])))]


SEGMENT_POINTS = {
    # some inputs finished, others not
    "segmenting": lambda out: len(list((out / "masks").glob("*.json"))) >= 3,
    # a raster's chunk parts being written or merged
    "merging parts": lambda out: any((out / ".parts").rglob("*.tif")),
    # the summary and the COCO labels being written
    "assembling": lambda out: any(out.glob("*.tmp-*")) or (out / "summary.jsonl").exists(),
}


def test_batch_segment_killed_anywhere_and_rerun_with_skip_existing_gives_the_same_outputs(tmp_path):
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    from tests.helpers import make_pointwise_model
    (tmp_path / "model").mkdir()
    model_dir, _ = make_pointwise_model(tmp_path / "model")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(inputs / f"p{i:02d}.png")
    with rasterio.open(inputs / "scene.tif", "w", driver="GTiff", width=640, height=512, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4100000, 10, 10), tiled=True,
                       blockxsize=128, blockysize=128) as dst:
        dst.write(rng.integers(0, 256, (3, 512, 640), dtype=np.uint8))

    def command(out):
        return [sys.executable, "-m", "pipelines.batch_segment", "--model", str(model_dir), "--input",
                f"{inputs}/*", "--output_dir", str(out), "--tile_size", "64", "--chunk_size", "128",
                "--skip_existing"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True, cwd=ROOT, env=env)
    reference = segment_outputs(tmp_path / "reference")
    assert len([name for name in reference if name.startswith("masks/")]) == 2 * 41
    hit = []
    for name, point in SEGMENT_POINTS.items():
        out = tmp_path / f"out-{name.split()[0]}"
        process = subprocess.Popen(command(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None and not (out.exists() and point(out)):
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hit.append(name)
        process.wait()
        done = {p.stem for p in (out / "masks").glob("*.json")} if (out / "masks").exists() else set()
        rerun = subprocess.run(command(out), check=True, capture_output=True, text=True, cwd=ROOT, env=env)
        # only the inputs without outputs were segmented again
        assert f"images_segmented={41 - len(done)}" in rerun.stdout or len(done) == 41, (name, rerun.stdout)
        assert not same_outputs(segment_outputs(out), reference), (name, same_outputs(segment_outputs(out), reference))
        assert not list(out.rglob("*.tmp-*")) and not list((out / ".parts").rglob("*.tif"))
    print(f"batch_segment killed while: {hit}")
    assert {"segmenting"} <= set(hit)
