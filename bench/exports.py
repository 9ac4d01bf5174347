"""Benchmark: CPU inference time per 512x512 tile of the exported formats against the Keras model,
in one run, alternating (Keras, TFLite float32, TFLite float16, ONNX; then again), medians.

    python bench/exports.py [--model demo_output/model] [--rounds 5] [--calls 10] [--size 512]

The model is the demo's (``make demo``); without one, the demo's network (the ``tiny`` preset,
untrained: the same computation). Each runtime gets the machine's cores (TFLite: ``num_threads``,
onnxruntime: its default). Prints ms per tile and each format's time over Keras's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "demo_output", "model"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per runtime per round")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    import onnxruntime
    import tensorflow as tf

    from bench.label_studio_backend import demo_network
    from segmodel import formats
    from segmodel.exported import load_exported
    work = tempfile.mkdtemp(prefix="segpipe-exports-")
    model_dir = args.model
    if not os.path.exists(os.path.join(model_dir, "model.keras")):
        model_dir = os.path.join(work, "model")
        os.makedirs(model_dir)
        demo_network(model_dir)
    model = load_exported(model_dir)
    formats.export(model_dir, f"{work}/f32.tflite", "tflite")
    formats.export(model_dir, f"{work}/f16.tflite", "tflite", "float16")
    formats.export(model_dir, f"{work}/model.onnx", "onnx")
    tile = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    keras_fn = tf.function(lambda x: tf.nn.softmax(model(tf.cast(x, tf.float32), training=False), axis=-1))
    runners = {"keras": lambda: keras_fn(tile).numpy()}
    for name in ("f32", "f16"):
        runner = tf.lite.Interpreter(model_path=f"{work}/{name}.tflite",
                                     num_threads=os.cpu_count()).get_signature_runner("serving_pixels")
        runners[f"tflite_{name}"] = (lambda r: lambda: r(pixels=tile))(runner)
    session = onnxruntime.InferenceSession(f"{work}/model.onnx", providers=["CPUExecutionProvider"])
    runners["onnx"] = lambda: session.run(["scores"], {"pixels": tile})
    for run in runners.values():  # compile, allocate
        run()
        run()
    # each runtime must compute what Keras computes before its time means anything
    reference = keras_fn(tile).numpy()[0]
    outputs = {"tflite_f32": runners["tflite_f32"]()["scores"][0], "tflite_f16": runners["tflite_f16"]()["scores"][0],
               "onnx": runners["onnx"]()[0][0]}
    for name, scores in outputs.items():
        agreement = float(np.mean(scores.argmax(-1) == reference.argmax(-1)))
        if scores.shape != reference.shape or agreement < 0.99:
            raise SystemExit(f"{name}: scores {scores.shape} agree with Keras on {agreement:.4f} of the pixels")
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                run()
            times[name].append(1000 * (time.perf_counter() - started) / args.calls)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    result = {"cores": os.cpu_count(), "tile": args.size, "ms_per_tile": medians,
              "over_keras": {name: medians[name] / medians["keras"] for name in medians}, "rounds": times}
    for name in medians:
        print(f"{name:12s} {medians[name]:7.1f} ms per {args.size}x{args.size} tile  ({result['over_keras'][name]:.2f}x Keras)")
    os.makedirs(os.path.join(ROOT, "bench_output"), exist_ok=True)
    with open(os.path.join(ROOT, "bench_output", "exports.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
