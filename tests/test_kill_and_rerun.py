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

from pipelines import demo_data

pytestmark = pytest.mark.slow  # about a minute: a dozen runs of the job as a process
ROOT = Path(__file__).resolve().parents[1]


def dataset_state(out: Path) -> dict:
    """What a reader sees: the manifest and the bytes of every shard in the folder."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".tfrecord" or p.name == "dataset.json"}


def assert_whole_or_absent(out: Path):
    """Either no manifest (a reader of the folder stops with a clear error) or a manifest whose
    shards are exactly the shards in the folder, each of the size it lists."""
    manifest = out / "dataset.json"
    if not manifest.exists():
        return
    listed = {s["file"]: s["bytes"] for split in json.loads(manifest.read_text())["splits"].values()
              for s in split["shards"]}
    present = {p.name: p.stat().st_size for p in out.iterdir() if ".tfrecord" in p.name}
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
    annotations = demo_data.write_coco_dataset(str(tmp_path / "coco"), 1200, size=(192, 256), seed=9)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.coco_to_tfrecord", "--annotations", annotations, "--images",
               str(tmp_path / "coco/images"), "--output_dir", str(out), "--val_fraction", "0.2", "--num_shards", "3",
               "--overwrite"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
    reference = dataset_state(out)
    assert "dataset.json" in reference and len(reference) == 7  # 3 train + 3 val shards and the manifest
    hit = []
    for name, point in POINTS.items():
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while process.poll() is None and not point(out, time.monotonic() - started):
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hit.append(name)
        process.wait()
        assert_whole_or_absent(out)
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
        assert dataset_state(out) == reference, name
        assert not list((out / ".staging").glob("*")) and not list(out.glob("*.tmp-*"))
    print(f"killed while: {hit}")
    assert {"converting", "writing shards"} <= set(hit)
