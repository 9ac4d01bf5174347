"""Benchmark: ``segpipe serve labelstudio``'s /predict latency per task, over HTTP on 127.0.0.1.

    python bench/label_studio_backend.py [--model demo_output/model] [--requests 50] [--width 1024 --height 768]

Two ways a task is answered: from a precomputed ``segpipe segment`` output (the mask read back
and encoded as BrushLabels) and from the model on the request (decode, tiled segmentation,
encoding). Each request holds one task of a ``--width`` x ``--height`` photo; the two kinds
alternate, so both see the same machine; p50 and p95 per kind. The model is the demo's
(``make demo`` writes demo_output/model); without one, the demo's network (the ``tiny`` preset,
untrained: the same computation) is exported into the output folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def demo_network(folder: str) -> str:
    from segcli.train import PRESETS, TrainConfig
    from segmodel import fcn
    from segmodel.train import build_model
    names = ["background", "road", "building", "water"]
    config = TrainConfig(**PRESETS["tiny"])
    fcn.export_model(build_model(config, len(names)), os.path.join(folder, "model.keras"))
    with open(os.path.join(folder, "classes.json"), "w") as handle:
        json.dump({"ignore_index": 255, "classes": [{"index": i, "name": n} for i, n in enumerate(names)]}, handle)
    return folder


def photos(folder: str, count: int, width: int, height: int) -> list:
    """Photo-like scenes (smooth colour fields with noise, PNG) of the requested size."""
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        coarse = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR)).astype(np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"photo{k:02d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "demo_output", "model"))
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_output", "label_studio_backend"))
    parser.add_argument("--requests", type=int, default=50, help="requests of each kind")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--photos", type=int, default=10)
    args = parser.parse_args(argv)
    from pipelines import batch_segment
    from pipelines.labeling import backend
    from segcli.serve import BackendConfig
    from segformat.label_studio import labeling_config
    os.makedirs(args.output_dir, exist_ok=True)
    model = args.model
    if not os.path.exists(os.path.join(model, "model.keras")):
        model = os.path.join(args.output_dir, "model")
        os.makedirs(model, exist_ok=True)
        demo_network(model)
        print(f"no model at {args.model}: the demo's network, untrained, exported to {model}")
    images = os.path.join(args.output_dir, "photos")
    os.makedirs(images, exist_ok=True)
    paths = photos(images, args.photos, args.width, args.height)
    seg = os.path.join(args.output_dir, "segmentation")
    batch_segment.run(["--model", model, "--input", os.path.join(images, "photo??.png"), "--output_dir", seg])
    config = BackendConfig(model=model, segmentation=seg, port=0, annotations_dir=os.path.join(args.output_dir, "q"))
    server = backend.make_server(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    names = list(server.backend.predictor.class_names)
    label_config = labeling_config(names, [(0, 0, 0)] * len(names))
    precomputed = set(server.backend.predictor.precomputed)
    # from the model: the same photos under names the segmentation does not hold
    uncached = []
    for path in paths:
        twin = path.replace(".png", "_new.png")
        if not os.path.exists(twin):
            os.link(path, twin)
        uncached.append(twin)

    def ask(path: str) -> float:
        body = json.dumps({"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=" + path.lstrip("/")}}],
                           "label_config": label_config}).encode()
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"})) as r:
            reply = json.loads(r.read())
        elapsed = time.perf_counter() - started
        if "result" not in reply["results"][0]:
            raise SystemExit(f"{path}: {reply['results'][0]}")
        return elapsed

    ask(uncached[0])  # the first model call compiles; not timed
    times = {"segmentation": [], "model": []}
    for k in range(args.requests):
        times["segmentation"].append(ask(paths[k % len(paths)]))
        times["model"].append(ask(uncached[k % len(uncached)]))
    server.shutdown()
    assert {os.path.basename(p) for p in paths} <= precomputed
    result = {"cores": os.cpu_count(), "photo": [args.width, args.height], "requests": args.requests,
              "model_dir": model}
    for kind, values in times.items():
        ms = 1000 * np.asarray(values)
        result[kind] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
        print(f"/predict from the {kind}: p50 {result[kind]['p50_ms']:.0f} ms, p95 {result[kind]['p95_ms']:.0f} ms "
              f"({args.requests} requests, {args.width}x{args.height}, {os.cpu_count()} cores)")
    with open(os.path.join(args.output_dir, "latency.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
