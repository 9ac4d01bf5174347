"""Benchmark: two local training workers (MultiWorkerMirroredStrategy on 127.0.0.1) against one
process on the same machine, the same data, global batch and steps, alternating.

    python bench/multi_worker.py [--images 96] [--epochs 3] [--rounds 2]

On one machine two workers share the same cores, so this is not a speed-up: the ratio shows what
the collective all-reduce and the second process cost per step. Images/s are the trained images
(steps x global batch) over the wall time of the whole command, start-up included (both pay it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_ports(n: int) -> list:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_command(data: str, model_dir: str, epochs: int, batch: int) -> list:
    return [sys.executable, "-m", "segcli.main", "train", "--train_data", f"{data}/train-*.tfrecord",
            "--model_dir", model_dir, "--config", "tiny", "--epochs", str(epochs), "--batch_size", str(batch),
            "--image_size", "128", "--progress", "0"]


def timed(commands_envs) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(c, env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for c, e in commands_envs]
    for p in processes:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a training process failed: {err.decode()[-2000:]}")
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8, help="the global batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from pipelines import coco_to_tfrecord
    from pipelines.demo_world import scenes
    work = tempfile.mkdtemp(prefix="segpipe-multiworker-")
    annotations = scenes.write_coco_dataset(f"{work}/coco", args.images, seed=3)
    coco_to_tfrecord.run(["--annotations", annotations, "--images", f"{work}/coco/images", "--output_dir",
                          f"{work}/data", "--val_fraction", "0"])
    steps = args.epochs * (args.images // args.batch_size)
    times = {"one process": [], "two workers": []}
    for _ in range(args.rounds):
        shutil.rmtree(f"{work}/one", ignore_errors=True)
        times["one process"].append(timed([(train_command(f"{work}/data", f"{work}/one", args.epochs, args.batch_size),
                                            dict(os.environ))]))
        shutil.rmtree(f"{work}/two", ignore_errors=True)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
        times["two workers"].append(timed([
            (train_command(f"{work}/data", f"{work}/two", args.epochs, args.batch_size),
             dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
            for i in range(2)]))
        for run in ("one", "two"):  # both runs trained to the end and exported a model
            with open(f"{work}/{run}/history.csv") as handle:
                epochs = len(handle.read().strip().splitlines()) - 1
            if epochs != args.epochs or not os.path.exists(f"{work}/{run}/model.keras"):
                raise SystemExit(f"the {run} run logged {epochs} epochs of {args.epochs} or exported no model")
    result = {"cores": os.cpu_count(), "steps": steps, "global_batch": args.batch_size,
              "images_per_s": {k: [steps * args.batch_size / t for t in v] for k, v in times.items()}}
    best = {k: max(v) for k, v in result["images_per_s"].items()}
    result["two_over_one"] = best["two workers"] / best["one process"]
    for k, v in result["images_per_s"].items():
        print(f"{k:12s}: {', '.join(f'{x:.1f}' for x in v)} images/s (whole command, {steps} steps of {args.batch_size})")
    print(f"two workers / one process: {result['two_over_one']:.2f} ({os.cpu_count()} cores)")
    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
