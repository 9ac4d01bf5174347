"""Benchmark: batch segmentation against the bare model, its own CPU cost, shuffle bytes, memory.

    python bench/batch_segment.py [--images 48] [--width 0.125] [--null] [--shuffle] [--memory] [--precision]

Throughput, in one run, same model, tile size and batch size (issue 9's targets):
  (a) the bare exported model on pre-decoded, pre-tiled arrays (the same tiles the job cuts);
  (b) ``pipelines.batch_segment`` as a command over N JPEGs, end to end (process start, graph
      construction, model load, decoding, inference, blending, PNG/JSON/COCO writing), and
      *steady*: the same command over N images minus over 1 image, for the (N - 1) images' tiles
      (what a long job sees: start-up is paid once per worker). Targets: steady (b)/(a) >= 0.8
      with the fast model (--width 0.125), >= 0.95 with the full FCN-8s.
--null: the model replaced by a constant of the same output shape (a zero 1x1 convolution):
  the pipeline's own CPU seconds per 512x512 tile (process CPU time, steady: N minus 1 image),
  for 4 and 21 classes. Target <= 15 ms at 4 classes.
--shuffle: bytes through every GroupByKey per input (a photo set and a GeoTIFF in chunks).
  Target: at most 64 KB per input (no masks go through a shuffle at all).
--memory: peak RSS of batch_segment on generated 4096x4096, 65536x4096 (wide) and 16384x16384
  3-band GeoTIFFs (tiny model), each in a fresh process. Target: each at most 1.3x the 4096^2 one.
--gis: --vectors --scores against masks alone on the 16384x16384 GeoTIFF, alternating runs.
  Targets: at most 15 % more wall time; peak RSS 16384^2 / 4096^2 with them at most 1.3.
Every run checks its outputs (images segmented == given, no error records, one mask per input)
before it prints a figure.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def make_model(model_dir: str, width: float, fc_units: int, num_classes: int = 4, null: bool = False) -> str:
    import keras
    from segmodel.fcn import build_fcn, export_model
    os.makedirs(model_dir, exist_ok=True)
    if null:  # a constant of the FCN's output shape, at almost no cost
        images = keras.Input((None, None, 3))
        model = keras.Model(images, keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros")(images))
    else:
        model = build_fcn("fcn8s", num_classes, width=width, fc_units=fc_units)
    export_model(model, f"{model_dir}/model.keras")
    with open(f"{model_dir}/classes.json", "w") as handle:
        json.dump({"ignore_index": 255, "classes": [{"index": i, "name": f"class_{i}"} for i in range(num_classes)]},
                  handle)
    return model_dir


def make_images(folder: str, count: int, height: int, width: int) -> list:
    import shutil

    import numpy as np
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


def cut_tiles(paths: list, tile: int, overlap: int) -> list:
    import numpy as np
    from PIL import Image

    from segmodel import tiling
    tiles = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        for r, c, th, tw in tiling.tile_windows(image.shape[0], image.shape[1], tile, overlap):
            tiles.append(image[r:r + th, c:c + tw])
    return tiles


def bare_model_seconds(model_dir: str, tiles: list, batch: int) -> float:
    """The model alone, called the fastest plain way: a compiled tf.function on pre-cut tiles
    (an eager Keras call is slower, and would flatter the pipeline, which compiles its call)."""
    import numpy as np
    import tensorflow as tf

    from segmodel.exported import load_exported
    model = load_exported(model_dir)
    call = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False), reduce_retracing=True)
    for k in range(0, len(tiles), batch):  # warm-up: tracing every batch shape, oneDNN kernel selection
        call(np.stack(tiles[k:k + batch]))
    started = time.perf_counter()
    for k in range(0, len(tiles), batch):
        np.asarray(call(np.stack(tiles[k:k + batch])))
    return time.perf_counter() - started


def run_job(args: list, out: str, expected: int) -> dict:
    """batch_segment as a command: wall seconds, CPU seconds of the process, checked outputs."""
    import shutil
    shutil.rmtree(out, ignore_errors=True)  # the outputs checked are this run's only
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.batch_segment", *args, "--output_dir", out],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"batch_segment failed:\n{done.stderr[-3000:]}")
    check_outputs(out, expected)
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "peak_rss_mb": after.ru_maxrss / 1024}


def check_outputs(out: str, expected: int) -> None:
    with open(f"{out}/summary.jsonl") as handle:
        summaries = [json.loads(line) for line in handle if line.strip()]
    with open(f"{out}/errors.jsonl") as handle:
        errors = handle.read().strip()
    masks = glob.glob(f"{out}/masks/**/*.png", recursive=True) + glob.glob(f"{out}/masks/**/*.tif", recursive=True)
    if len(summaries) != expected or errors or len(masks) != expected:
        raise SystemExit(f"{out}: {len(summaries)} summaries and {len(masks)} masks for {expected} inputs, "
                         f"errors: {errors[:500]!r}")


def throughput(args, work: str) -> dict:
    model_dir = make_model(os.path.join(work, f"model_w{args.width}"), args.width,
                           4096 if args.width == 1.0 else max(64, int(4096 * args.width)))
    paths = make_images(os.path.join(work, "images"), args.images, args.height, args.width_px)
    tiles = cut_tiles(paths, args.tile_size, args.tile_overlap)
    per_image = len(tiles) // len(paths)
    seconds_a = bare_model_seconds(model_dir, tiles, args.batch_size)
    flags = ["--model", model_dir, "--tile_size", str(args.tile_size), "--tile_overlap", str(args.tile_overlap),
             "--batch_size", str(args.batch_size)]
    one = run_job([*flags, "--input", paths[0]], os.path.join(work, "out_one"), 1)
    full = run_job([*flags, "--input", os.path.join(work, "images", "*.jpg")], os.path.join(work, "out"), len(paths))
    a = len(tiles) / seconds_a
    b_end = len(tiles) / full["wall_s"]
    b_steady = (len(tiles) - per_image) / (full["wall_s"] - one["wall_s"])
    print(f"{args.images} images of {args.width_px}x{args.height} = {len(tiles)} tiles of {args.tile_size}, batch "
          f"{args.batch_size}, FCN-8s width {args.width}")
    print(f"(a) bare model: {a:.2f} tiles/s; (b) pipeline steady ({args.images} minus 1 image: "
          f"{full['wall_s']:.1f} - {one['wall_s']:.1f} s): {b_steady:.2f} tiles/s, (b)/(a) = {b_steady / a:.2f}; "
          f"end to end: {b_end:.2f} tiles/s, (b)/(a) = {b_end / a:.2f}")
    return {"tiles": len(tiles), "a_bare_model_tiles_per_s": a, "b_steady_tiles_per_s": b_steady,
            "b_end_to_end_tiles_per_s": b_end, "steady_ratio": b_steady / a, "end_to_end_ratio": b_end / a}


def null_model_cost(args, work: str) -> dict:
    results = {}
    paths = make_images(os.path.join(work, "images_null"), args.images, args.height, args.width_px)
    tiles = len(cut_tiles(paths, 512, 64))
    for classes in (4, 21):
        model_dir = make_model(os.path.join(work, f"model_null_{classes}"), 0, 0, classes, null=True)
        flags = ["--model", model_dir, "--tile_size", "512", "--tile_overlap", "64", "--batch_size", "8"]
        one = run_job([*flags, "--input", paths[0]], os.path.join(work, f"out_null_one_{classes}"), 1)
        full = run_job([*flags, "--input", os.path.join(work, "images_null", "*.jpg")],
                       os.path.join(work, f"out_null_{classes}"), len(paths))
        per_tile = (full["cpu_s"] - one["cpu_s"]) / (tiles - tiles // len(paths))
        wall_tile = (full["wall_s"] - one["wall_s"]) / (tiles - tiles // len(paths))
        results[f"null_cpu_ms_per_tile_{classes}_classes"] = 1000 * per_tile
        print(f"null model, {classes} classes: {1000 * per_tile:.1f} ms of CPU per 512x512 tile (steady, "
              f"{args.images} minus 1 image), {1000 * wall_tile:.1f} ms wall")
    return results


def shuffle_bytes(work: str) -> dict:
    import shutil

    from pipelines import batch_segment
    from pipelines.demo_world.scenes import write_geotiff_mosaic
    from tests.shuffle_bytes import counting_shuffles, shuffle_bytes as measured
    model_dir = make_model(os.path.join(work, "model_tiny"), 0.125, 128)
    photos = make_images(os.path.join(work, "images_shuffle"), 8, 768, 1024)
    raster = os.path.join(work, "raster_shuffle", "mosaic.tif")
    if not os.path.exists(raster):
        os.makedirs(os.path.dirname(raster), exist_ok=True)
        write_geotiff_mosaic(raster, 6000, block=1000)
    results = {}
    for name, pattern, count, pixels in (("photos", os.path.join(work, "images_shuffle", "*.jpg"), len(photos),
                                          len(photos) * 768 * 1024), ("geotiff", raster, 1, 6000 * 6000)):
        out = os.path.join(work, f"out_shuffle_{name}")
        shutil.rmtree(out, ignore_errors=True)
        with counting_shuffles():
            result = batch_segment.run(["--model", model_dir, "--input", pattern, "--output_dir", out,
                                        "--chunk_size", "2048"])
        check_outputs(out, count)
        total = sum(measured(result).values())
        results[f"shuffle_bytes_per_input_{name}"] = total / count
        print(f"shuffles, {name}: {total / count:.0f} bytes per input, {total / pixels:.5f} per input pixel "
              f"({count} inputs, {pixels / count / 1e6:.1f} Mpx each)")
    return results


def peak_rss(work: str) -> dict:
    import shutil

    from pipelines.demo_world.scenes import write_geotiff_mosaic
    tiny = make_model(os.path.join(work, "model_tiny"), 0.125, 128)
    results = {}
    for height, width in ((4096, 4096), (4096, 65536), (16384, 16384)):
        raster = os.path.join(work, f"raster_{height}x{width}", "mosaic.tif")
        if not os.path.exists(raster):
            os.makedirs(os.path.dirname(raster), exist_ok=True)
            write_geotiff_mosaic(raster, height, block=1024, width=width)
        code = ("import resource, sys; from pipelines import batch_segment; batch_segment.run(sys.argv[1:]); "
                "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        out = os.path.join(work, f"raster_out_{height}x{width}")
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, "--model", tiny, "--input", raster, "--output_dir", out],
                              capture_output=True, text=True, cwd=ROOT, env=ENV)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        check_outputs(out, 1)
        peak = int(done.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024
        results[f"peak_rss_mb_{height}x{width}"] = peak
        print(f"{width}x{height} GeoTIFF: peak RSS {peak:.0f} MB ({time.perf_counter() - started:.0f} s)")
    base = results["peak_rss_mb_4096x4096"]
    for key in ("4096x65536", "16384x16384"):
        results[f"rss_ratio_{key}"] = results[f"peak_rss_mb_{key}"] / base
        print(f"peak RSS {key} / 4096x4096 = {results[f'rss_ratio_{key}']:.2f}")
    return results


def gis_cost(work: str, rounds: int) -> dict:
    """What the GIS outputs cost: ``--vectors --scores`` against masks alone on the 16384^2
    GeoTIFF (tiny model, default chunks), in alternating runs (masks, GIS, masks, GIS, ...: the
    machine's drift falls on both), the median of each; peak RSS 16384^2 / 4096^2 with them on; the
    bytes through every GroupByKey per raster (each run counts them, so both arms pay the same)."""
    import shutil
    import statistics

    from pipelines.demo_world.scenes import write_geotiff_mosaic
    tiny = make_model(os.path.join(work, "model_tiny"), 0.125, 128)
    code = ("import resource, sys; from pipelines import batch_segment; "
            "from tests.shuffle_bytes import counting_shuffles, shuffle_bytes\n"
            "with counting_shuffles():\n    result = batch_segment.run(sys.argv[1:])\n"
            "print('SHUFFLE_BYTES', sum(shuffle_bytes(result).values()))\n"
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def run(size: int, gis: bool) -> dict:
        raster = os.path.join(work, f"raster_{size}x{size}", "mosaic.tif")
        if not os.path.exists(raster):
            os.makedirs(os.path.dirname(raster), exist_ok=True)
            write_geotiff_mosaic(raster, size, block=1024, width=size)
        out = os.path.join(work, f"gis_out_{size}")
        shutil.rmtree(out, ignore_errors=True)
        flags = ["--vectors", "--scores"] if gis else []
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, "--model", tiny, "--input", raster, "--output_dir", out,
                               *flags], capture_output=True, text=True, cwd=ROOT, env=ENV)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        check_outputs(out, 1)
        if gis:  # the outputs asked for are there: a scores COG and polygons
            import fiona
            if not os.path.exists(f"{out}/scores/mosaic.tif"):
                raise SystemExit(f"{out}: no scores COG")
            with fiona.open(f"{out}/segments.gpkg") as layer:
                features = len(layer)
            if not features:
                raise SystemExit(f"{out}: no polygons")
        result = {"wall_s": wall, "peak_rss_mb": int(done.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024,
                  "shuffle_bytes": int(done.stdout.rsplit("SHUFFLE_BYTES", 1)[1].split()[0])}
        print(f"{size}^2 {'--vectors --scores' if gis else 'masks only'}: {wall:.0f} s, peak RSS "
              f"{result['peak_rss_mb']:.0f} MB, {result['shuffle_bytes']} bytes through GroupByKeys"
              + (f", {features} polygons" if gis else ""), flush=True)
        return result

    times = {False: [], True: []}
    last = {}
    for _ in range(rounds):
        for gis in (False, True):
            last[gis] = run(16384, gis)
            times[gis].append(last[gis]["wall_s"])
    small = run(4096, True)
    masks, gis = statistics.median(times[False]), statistics.median(times[True])
    results = {"gis_wall_s_16384": times[True], "masks_wall_s_16384": times[False],
               "gis_time_ratio": gis / masks, "gis_rss_ratio_16384_4096": last[True]["peak_rss_mb"] / small["peak_rss_mb"],
               "gis_peak_rss_mb_16384": last[True]["peak_rss_mb"], "gis_peak_rss_mb_4096": small["peak_rss_mb"],
               "gis_shuffle_bytes_16384": last[True]["shuffle_bytes"],
               "masks_shuffle_bytes_16384": last[False]["shuffle_bytes"]}
    print(f"--vectors --scores on 16384^2: {gis:.0f} s against {masks:.0f} s for masks alone (medians of {rounds}): "
          f"{100 * (gis / masks - 1):+.1f} % (target <= +15 %); peak RSS 16384^2 / 4096^2 with them: "
          f"{results['gis_rss_ratio_16384_4096']:.2f} (target <= 1.3); bytes through GroupByKeys per raster: "
          f"{last[True]['shuffle_bytes']} (masks alone: {last[False]['shuffle_bytes']})")
    return results


def precision_check(work: str, args) -> dict:
    """bfloat16 vs float32: speed of the bench model on the same tiles; changed pixels on a
    trained model (an untrained FCN's zero-initialised scores would agree trivially)."""
    import numpy as np
    from PIL import Image

    from segmodel.exported import load_exported
    from segmodel.fcn import with_precision
    model_dir = make_model(os.path.join(work, f"model_w{args.width}"), args.width,
                           4096 if args.width == 1.0 else max(64, int(4096 * args.width)))
    paths = make_images(os.path.join(work, "images_precision"), 4, args.height, args.width_px)
    tiles = cut_tiles(paths, args.tile_size, args.tile_overlap)
    model = load_exported(model_dir)
    seconds = {}
    for precision in ("float32", "bfloat16"):
        m = with_precision(model, precision)
        m(np.stack(tiles[:args.batch_size]))
        started = time.perf_counter()
        for k in range(0, len(tiles), args.batch_size):
            np.asarray(m(np.stack(tiles[k:k + args.batch_size])))
        seconds[precision] = time.perf_counter() - started
    out = {"bf16_speedup_bare_model": seconds["float32"] / seconds["bfloat16"]}
    print(f"bfloat16 vs float32, the bare model, FCN-8s width {args.width}, {len(tiles)} tiles: "
          f"{out['bf16_speedup_bare_model']:.2f}x faster")
    # the same through the pipeline's own flag: batch_segment --precision, as a command, two
    # rounds in alternating order (float32, bfloat16, bfloat16, float32), summed per precision
    flags = ["--model", model_dir, "--input", os.path.join(work, "images_precision", "*.jpg"), "--tile_size",
             str(args.tile_size), "--tile_overlap", str(args.tile_overlap), "--batch_size", str(args.batch_size)]
    wall = {"float32": 0.0, "bfloat16": 0.0}
    for precision in ("float32", "bfloat16", "bfloat16", "float32"):
        wall[precision] += run_job([*flags, "--precision", precision], os.path.join(work, f"out_{precision}"),
                                   len(paths))["wall_s"]
    out["bf16_speedup"] = wall["float32"] / wall["bfloat16"]
    print(f"bfloat16 vs float32, batch_segment --precision end to end (2 runs each): {out['bf16_speedup']:.2f}x faster")
    images = sorted(glob.glob(args.trained_images))
    if os.path.exists(f"{args.trained_model}/model.keras") and images:
        trained = load_exported(args.trained_model)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width_px", type=int, default=1024)
    parser.add_argument("--width", type=float, default=0.125, help="model width (1.0: the paper's FCN-8s)")
    parser.add_argument("--tile_size", type=int, default=512)
    parser.add_argument("--tile_overlap", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--no_throughput", action="store_true", help="skip (a)/(b)")
    parser.add_argument("--null", action="store_true", help="the pipeline's own CPU cost with a null model")
    parser.add_argument("--shuffle", action="store_true", help="bytes through shuffles per input")
    parser.add_argument("--memory", action="store_true", help="peak RSS on 4096^2, 65536x4096, 16384^2 GeoTIFFs")
    parser.add_argument("--gis", action="store_true", help="--vectors --scores against masks alone on 16384^2")
    parser.add_argument("--gis_rounds", type=int, default=2, help="alternating runs of each for --gis")
    parser.add_argument("--precision", action="store_true",
                        help="also time bfloat16 vs float32 on the same tiles, and count changed pixels with a "
                             "trained model (--trained_model) on its held-out images (--trained_images)")
    parser.add_argument("--trained_model", default=os.path.join(ROOT, "demo_output", "model"))
    parser.add_argument("--trained_images", default=os.path.join(ROOT, "demo_output", "holdout", "images", "*.jpg"))
    parser.add_argument("--output", default=os.path.join(ROOT, "bench_output"))
    args = parser.parse_args(argv)
    work = os.path.join(args.output, "batch_segment")
    os.makedirs(work, exist_ok=True)
    results = {}
    if not args.no_throughput:
        results.update(throughput(args, work))
    if args.null:
        results.update(null_model_cost(args, work))
    if args.shuffle:
        results.update(shuffle_bytes(work))
    if args.precision:
        results.update(precision_check(work, args))
    if args.memory:
        results.update(peak_rss(work))
    if args.gis:
        results.update(gis_cost(work, args.gis_rounds))
    name = f"batch_segment_w{args.width}.json"
    with open(os.path.join(args.output, name), "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
