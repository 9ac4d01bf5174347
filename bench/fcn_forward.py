"""Benchmark: FCN-8s (VGG16, 21 classes) forward and train-step throughput at 224 and 512 on this
machine, as achieved FLOP/s over the FLOP/s of a large fp32 matmul timed in the same run.

    python bench/fcn_forward.py [--sizes 224 512] [--batches 8 2] [--repeats 3]

FLOPs are counted from the layers (2 x multiply-adds of every Conv2D and Conv2DTranspose at the
shapes this input produces, after the model's pad to a multiple of 32); a train step is counted
as 3x the forward pass (forward + two backward products), the usual estimate.
Target (issue 3): forward at least 0.8 of the matmul rate on CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def count_flops(model, height: int, width: int) -> float:
    import keras
    import numpy as np
    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    probe = keras.Model(model.input, [layer.input for layer in convs] + [layer.output for layer in convs])
    shapes = probe(np.zeros((1, height, width, 3), np.float32))
    total = 0.0
    for layer, x, y in zip(convs, shapes[:len(convs)], shapes[len(convs):]):
        kh, kw = layer.kernel_size
        c_in, c_out = x.shape[-1], layer.filters
        positions = x.shape[1] * x.shape[2] if isinstance(layer, keras.layers.Conv2DTranspose) else y.shape[1] * y.shape[2]
        total += 2.0 * positions * kh * kw * c_in * c_out
    return total


def matmul_flops_per_s(n: int = 4096, repeats: int = 5) -> float:
    import tensorflow as tf
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * n ** 3 / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    # Batch per size: 8 at 224 (smaller batches leave oneDNN's GEMMs too small: 0.72 at batch 2),
    # 2 at 512 (already large; a training batch of 8 at 512 is a GPU's job).
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench_output"))
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf
    import keras
    from segmodel.fcn import build_fcn
    from segmodel.losses import MaskedCrossEntropy

    model = build_fcn("fcn8s", 21)
    model.compile(optimizer=keras.optimizers.SGD(1e-10, momentum=0.9), loss=MaskedCrossEntropy(), jit_compile=False)
    forward = tf.function(lambda x: model(x, training=False))
    baseline = matmul_flops_per_s()
    print(f"fp32 matmul 4096^3: {baseline / 1e9:.1f} GFLOP/s")
    results = {"matmul_gflops": baseline / 1e9}
    rng = np.random.default_rng(0)
    for size, batch in zip(args.sizes, args.batches):
        flops = count_flops(model, size, size)
        x = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        y = rng.integers(0, 21, (batch, size, size, 1)).astype(np.uint8)
        forward(x).numpy()
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            forward(x).numpy()
            best = min(best, time.perf_counter() - started)
        fwd_rate = flops * batch / best
        model.train_on_batch(x, y)
        best_train = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            model.train_on_batch(x, y)
            best_train = min(best_train, time.perf_counter() - started)
        train_rate = 3 * flops * batch / best_train
        results[str(size)] = {"batch": batch, "gflop_per_image": flops / 1e9, "forward_images_per_s": batch / best,
                              "forward_ratio": fwd_rate / baseline, "train_images_per_s": batch / best_train,
                              "train_ratio": train_rate / baseline}
        print(f"{size}x{size}, batch {batch}: {flops / 1e9:.1f} GFLOP/image; forward {batch / best:.2f} images/s = "
              f"{fwd_rate / 1e9:.1f} GFLOP/s = {fwd_rate / baseline:.2f} of matmul; train step "
              f"{batch / best_train:.2f} images/s = {train_rate / baseline:.2f} of matmul")
    with open(os.path.join(args.output, "fcn_forward.json"), "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
