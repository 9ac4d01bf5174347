"""segpipe dataset raster: chips per second per core and peak memory against scene size.

    python bench/raster_chips.py [--sizes 4096,16384] [--chip 512]

For each size, a 3-band 16-bit scene (smooth fields plus noise, tiled and deflated, so the
stretch and the PNG encoding do real work) and a label raster on its grid are written block by
block, then the job runs in its own process on the local runner. Printed per size: chips
written, CPU seconds of the job's process (user + system), chips per CPU second (= per core),
and its peak RSS; then the steady rate from the difference of the two runs (process start-up and
planning cancel out) and the RSS ratio of the largest scene to the smallest (target: at most 1.3,
memory must not grow with the scene).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_scene(folder: str, size: int, block: int = 1024) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    os.makedirs(f"{folder}/scenes", exist_ok=True)
    os.makedirs(f"{folder}/labels", exist_ok=True)
    profile = dict(driver="GTiff", width=size, height=size, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(f"{folder}/scenes/scene.tif", "w", count=3, **profile) as scene, \
            rasterio.open(f"{folder}/labels/scene.tif", "w", count=1, **dict(profile, dtype="uint8")) as labels:
        for row in range(0, size, block):
            for col in range(0, size, block):
                rng = np.random.default_rng([size, row, col])
                yy, xx = np.mgrid[row:row + block, col:col + block] / 700.0
                field = np.sin(yy) * np.cos(xx * 1.3)
                bands = np.stack([(field * (900 + 200 * k) + 2000 + rng.normal(0, 40, field.shape))
                                  for k in range(3)]).astype(np.uint16)
                window = Window(col, row, block, block)
                scene.write(bands, window=window)
                labels.write(np.digitize(field, [-0.5, 0.0, 0.5]).astype(np.uint8)[None], window=window)


def run_job(folder: str, chip: int, size: int) -> dict:
    colors = f"{folder}/colors.json"
    with open(colors, "w") as handle:
        json.dump({"classes": ["a", "b", "c", "d"], "colors": [{"color": [k], "index": k} for k in range(4)]}, handle)
    probe = ("import resource, sys\nfrom pipelines import raster_to_tfrecord\n"
             "raster_to_tfrecord.run(sys.argv[1:])\n"
             "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
             "print('USAGE', usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n")
    started = time.time()
    out = subprocess.run([sys.executable, "-c", probe, "--scenes", f"{folder}/scenes/*.tif", "--labels",
                          f"{folder}/labels/*.tif", "--mask_colors", colors, "--output_dir", f"{folder}/out",
                          "--chip_size", str(chip), "--stride", str(chip), "--overwrite"],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    line = next(line for line in out.stdout.splitlines() if line.startswith("USAGE"))
    cpu, rss_kb = float(line.split()[1]), int(line.split()[2])
    with open(f"{folder}/out/dataset.json") as handle:
        splits = json.load(handle)["splits"]
    chips = sum(split["examples"] for split in splits.values())
    # the count the scene's size dictates (a grid of chip x chip windows at stride chip, every one
    # of them labelled and without nodata), not the job's own count
    expected = (size // chip) ** 2
    with open(f"{folder}/out/errors.jsonl") as handle:
        errors = [line for line in handle if line.strip()]
    if chips != expected or errors:
        raise SystemExit(f"{size}x{size}: {chips} chips written, {expected} expected; {len(errors)} error records")
    return {"chips": chips, "cpu_s": cpu, "wall_s": time.time() - started, "peak_rss_mb": rss_kb / 1024}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4096,16384")
    parser.add_argument("--chip", type=int, default=512)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="segpipe-chips-") as root:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = f"{root}/{size}"
            write_scene(folder, size)
            result = run_job(folder, args.chip, size)
            results[size] = result
            print(f"{size}x{size}: {result['chips']} chips of {args.chip} in {result['cpu_s']:.1f} CPU s "
                  f"({result['chips'] / result['cpu_s']:.1f} chips per core-second, wall {result['wall_s']:.0f} s); "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    sizes = sorted(results)
    small, big = results[sizes[0]], results[sizes[-1]]
    rate = (big["chips"] - small["chips"]) / (big["cpu_s"] - small["cpu_s"])
    print(f"steady rate (the difference of the two runs, start-up cancelled): {rate:.1f} chips per core-second")
    ratio = results[sizes[-1]]["peak_rss_mb"] / results[sizes[0]]["peak_rss_mb"]
    print(f"peak RSS {sizes[-1]}^2 / {sizes[0]}^2 = {ratio:.2f} (target <= 1.3)")
    return results


if __name__ == "__main__":
    main()
