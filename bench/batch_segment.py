"""Benchmark: batch segmentation overhead and memory.

    python bench/batch_segment.py [--images 8] [--width 1.0] [--memory]

Throughput, in one run, same model, tile size and batch size:
  (a) the bare exported model on pre-decoded, pre-tiled arrays (the same tiles the job cuts);
  (b) pipelines.batch_segment end to end on the same images as JPEG files (process start,
      decoding, RunInference, blending, PNG/JSON writing, COCO labels included).
Target (issue 4): (b)/(a) at least 0.85.
--memory: peak RSS of batch_segment on generated 4096x4096 and 16384x16384 3-band GeoTIFFs
(tiny model), each in a fresh process. Target: the large one at most 1.3x the small one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_model(model_dir: str, width: float, fc_units: int, num_classes: int = 4) -> None:
    from segmodel.fcn import build_fcn, export_model
    os.makedirs(model_dir, exist_ok=True)
    export_model(build_fcn("fcn8s", num_classes, width=width, fc_units=fc_units), f"{model_dir}/model.keras")
    with open(f"{model_dir}/classes.json", "w") as handle:
        json.dump({"ignore_index": 255, "classes": [{"index": i, "name": f"class_{i}"} for i in range(num_classes)]},
                  handle)


def make_images(folder: str, count: int, height: int, width: int) -> list:
    import numpy as np
    import shutil
    from PIL import Image
    shutil.rmtree(folder, ignore_errors=True)  # (b) globs the folder: only this run's images
    os.makedirs(folder)
    paths = []
    for k in range(count):
        rng = np.random.default_rng(k)
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
        path = os.path.join(folder, f"img{k:03d}.jpg")
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
    return paths


def bare_model_seconds(model_dir: str, paths: list, tile: int, overlap: int, batch: int) -> tuple:
    import keras
    import numpy as np
    from PIL import Image
    import segmodel  # noqa: F401
    from segmodel import tiling
    model = keras.models.load_model(f"{model_dir}/model.keras", compile=False)
    tiles = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        for r, c, th, tw in tiling.tile_windows(image.shape[0], image.shape[1], tile, overlap):
            tiles.append(image[r:r + th, c:c + tw])
    model(np.stack(tiles[:batch]))  # warm-up: graph tracing and oneDNN kernel selection
    started = time.perf_counter()
    for k in range(0, len(tiles), batch):
        np.asarray(model(np.stack(tiles[k:k + batch]), training=False))
    return time.perf_counter() - started, len(tiles)


def precision_check(model_dir: str, paths: list, args) -> dict:
    """bfloat16 vs float32: speed of the bench model on the same tiles; changed pixels on a
    trained model (an untrained FCN's zero-initialised scores would agree trivially)."""
    import glob
    import keras
    import numpy as np
    from PIL import Image
    import segmodel  # noqa: F401
    from segmodel import tiling
    from segmodel.fcn import with_precision
    model = keras.models.load_model(f"{model_dir}/model.keras", compile=False)
    tiles = []
    for path in paths[:4]:
        image = np.asarray(Image.open(path).convert("RGB"))
        for r, c, th, tw in tiling.tile_windows(image.shape[0], image.shape[1], args.tile_size, args.tile_overlap):
            tiles.append(image[r:r + th, c:c + tw])
    seconds = {}
    for precision in ("float32", "bfloat16"):
        m = with_precision(model, precision)
        m(np.stack(tiles[:args.batch_size]))
        started = time.perf_counter()
        for k in range(0, len(tiles), args.batch_size):
            np.asarray(m(np.stack(tiles[k:k + args.batch_size])))
        seconds[precision] = time.perf_counter() - started
    out = {"bf16_speedup": seconds["float32"] / seconds["bfloat16"]}
    print(f"bfloat16 vs float32, FCN-8s width {args.width}, {len(tiles)} tiles: {out['bf16_speedup']:.2f}x faster")
    images = sorted(glob.glob(args.trained_images))
    if os.path.exists(f"{args.trained_model}/model.keras") and images:
        trained = keras.models.load_model(f"{args.trained_model}/model.keras", compile=False)
        fast = with_precision(trained, "bfloat16")
        changed = total = 0
        for path in images:
            image = np.asarray(Image.open(path).convert("RGB"))[None]
            a = np.asarray(trained(image)).argmax(-1)
            b = np.asarray(fast(image)).argmax(-1)
            changed += int((a != b).sum())
            total += a.size
        out["bf16_changed_pixel_fraction"] = changed / total
        print(f"bfloat16 changes the class of {100 * changed / total:.3f}% of pixels ({args.trained_model}, "
              f"{len(images)} images)")
    return out


def peak_rss_mb(args: list) -> float:
    code = ("import resource, sys; from pipelines import batch_segment; batch_segment.run(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return int(out.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width_px", type=int, default=1024)
    parser.add_argument("--width", type=float, default=1.0, help="model width (1.0: the paper's FCN-8s)")
    parser.add_argument("--tile_size", type=int, default=512)
    parser.add_argument("--tile_overlap", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--precision", action="store_true",
                        help="also time bfloat16 vs float32 on the same tiles, and count changed pixels with a "
                             "trained model (--trained_model) on its held-out images (--trained_images)")
    parser.add_argument("--trained_model", default=os.path.join(ROOT, "demo_output", "model"))
    parser.add_argument("--trained_images", default=os.path.join(ROOT, "demo_output", "holdout", "images", "*.jpg"))
    parser.add_argument("--output", default=os.path.join(ROOT, "bench_output"))
    args = parser.parse_args(argv)
    work = os.path.join(args.output, "batch_segment")
    results = {}
    model_dir = os.path.join(work, f"model_w{args.width}")
    make_model(model_dir, args.width, 4096 if args.width == 1.0 else max(64, int(4096 * args.width)))
    paths = make_images(os.path.join(work, "images"), args.images, args.height, args.width_px)
    seconds_a, tiles = bare_model_seconds(model_dir, paths, args.tile_size, args.tile_overlap, args.batch_size)
    out = os.path.join(work, "out")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.batch_segment", "--model", model_dir, "--input",
                    os.path.join(work, "images", "*.jpg"), "--output_dir", out, "--tile_size", str(args.tile_size),
                    "--tile_overlap", str(args.tile_overlap), "--batch_size", str(args.batch_size)],
                   check=True, cwd=ROOT, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds_b = time.perf_counter() - started
    results.update({"tiles": tiles, "a_bare_model_tiles_per_s": tiles / seconds_a,
                    "b_pipeline_tiles_per_s": tiles / seconds_b, "ratio_b_over_a": seconds_a / seconds_b})
    print(f"{args.images} images of {args.width_px}x{args.height} = {tiles} tiles of {args.tile_size}, batch "
          f"{args.batch_size}, FCN-8s width {args.width}")
    print(f"(a) bare model: {tiles / seconds_a:.2f} tiles/s; (b) pipeline end to end: {tiles / seconds_b:.2f} "
          f"tiles/s; (b)/(a) = {seconds_a / seconds_b:.2f}")
    if args.precision:
        results.update(precision_check(model_dir, paths, args))
    if args.memory:
        from pipelines.demo_data import write_geotiff_mosaic
        tiny = os.path.join(work, "model_tiny")
        make_model(tiny, 0.125, 128)
        for size in (4096, 16384):
            raster = os.path.join(work, f"raster_{size}", "mosaic.tif")
            if not os.path.exists(raster):
                os.makedirs(os.path.dirname(raster), exist_ok=True)
                write_geotiff_mosaic(raster, size, block=1024)
            started = time.perf_counter()
            peak = peak_rss_mb(["--model", tiny, "--input", raster, "--output_dir",
                                os.path.join(work, f"raster_out_{size}"), "--tile_size", "512"])
            results[f"peak_rss_mb_{size}"] = peak
            print(f"{size}x{size} GeoTIFF: peak RSS {peak:.0f} MB ({time.perf_counter() - started:.0f}s)")
        results["rss_ratio"] = results["peak_rss_mb_16384"] / results["peak_rss_mb_4096"]
        print(f"peak RSS 16384^2 / 4096^2 = {results['rss_ratio']:.2f}")
    with open(os.path.join(args.output, "batch_segment.json"), "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
