"""Benchmark: COCO -> TFRecord throughput, three converters on the same files, whole commands
(process start included), measured in one run.

    python bench/coco_to_tfrecord.py --num_images 10000 [--skip_model_garden] [--profile]

(a) a straightforward single-process loop (bench/simple_coco_loop.py): the same output as (c),
    one semantic mask PNG per image in TFRecords;
(b) TF Model Garden's converter, official.vision.data.create_coco_tf_record --include_masks
    --num_processes=2, in its own virtualenv (bench_output/mg-venv: pip install tf-models-official).
    Not the same output: one PNG per *instance* plus boxes, no semantic mask;
(c) this project's pipeline with 2 local Beam workers (multi_processing);
(d) the loop of (a) in 2 processes: the equal-output baseline at the same parallelism as (c).
Each converter's output is checked (N records, no error) before a figure is printed; a baseline
that fails fails the benchmark (--skip_model_garden leaves (b) out on purpose).
Prints images/s and the ratios; --profile adds a cProfile of (c)'s per-image work in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.coco_data import generate  # noqa: E402


def timed(command, env=None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{result.stderr[-3000:]}")
    return elapsed


def count_records(pattern: str) -> int:
    import glob

    import tensorflow as tf
    files = sorted(glob.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files)) if files else 0


def check(what: str, written: int, expected: int) -> None:
    if written != expected:
        raise SystemExit(f"{what} wrote {written} records for {expected} images: its time would not compare")


def model_garden_python(out: str) -> str | None:
    venv = os.path.join(out, "mg-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        if subprocess.run([python, "-m", "pip", "install", "-q", "tf-models-official"]).returncode != 0:
            return None
    probe = subprocess.run([python, "-c", "import official.vision.data.create_coco_tf_record"], capture_output=True)
    return python if probe.returncode == 0 else None


def profile_pipeline(annotations: str, images: str, out: str, limit: int = 25) -> str:
    """cProfile of the per-image work (what one Beam worker does per element), in one process."""
    import cProfile
    import io
    import pstats
    import ijson
    from pipelines import coco_to_tfrecord as c
    from segformat import masks
    with open(annotations, "rb") as handle:
        categories = list(ijson.items(handle, "categories.item", use_float=True))
    table = masks.build_class_table(categories, "all")
    anns = {}
    for section, obj in c.stream_coco(annotations):
        if section == "annotations":
            anns.setdefault(obj["image_id"], []).append(
                {"id": obj["id"], "image_id": obj["image_id"], "category_id": obj["category_id"],
                 "segmentation": obj["segmentation"], "iscrowd": obj["iscrowd"]})
    with open(annotations) as handle:
        image_records = json.load(handle)["images"]
    fn = c.CocoExampleFn(c.CocoConfig(images_root=images))
    fn.setup()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    batch = [(image["id"], {"images": [image], "annotations": [anns.get(image["id"], [])]})
             for image in image_records]
    for start in range(0, len(batch), 16):  # the pipeline's batches (BatchElements)
        for _ in fn.process(batch[start:start + 16], table):
            pass
    profiler.disable()
    fn.teardown()
    per_image_ms = (time.perf_counter() - started) / len(image_records) * 1000
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(limit)
    return f"per-image work in one process: {per_image_ms:.2f} ms/image\n" + stream.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench_output"))
    parser.add_argument("--skip_model_garden", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every converter, in alternating order")
    args = parser.parse_args(argv)
    n = args.num_images
    data = os.path.join(args.output, f"coco_{n}")
    started = time.perf_counter()
    annotations = generate(data, n)
    print(f"data: {n} images in {data} ({time.perf_counter() - started:.0f}s to generate or find)")
    images = os.path.join(data, "images")
    results = {"num_images": n, "cpus": os.cpu_count()}
    work = os.path.join(args.output, "work")

    def fresh(name):
        path = os.path.join(work, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    simple = os.path.join(ROOT, "bench/simple_coco_loop.py")

    def run_simple(processes):
        def run(out):
            seconds = timed([sys.executable, simple, annotations, images, os.path.join(out, "simple"),
                             *(["--processes", str(processes)] if processes > 1 else [])], env)
            check("(a)" if processes == 1 else "(d)", count_records(os.path.join(out, "simple-*.tfrecord")), n)
            return seconds
        return run

    def run_model_garden(out, python=None):
        seconds = timed([python, "-m", "official.vision.data.create_coco_tf_record", "--logtostderr",
                         f"--image_dir={images}", f"--object_annotations_file={annotations}",
                         f"--output_file_prefix={out}/train", "--num_shards=8", "--include_masks=True",
                         "--num_processes=2"], env)
        check("(b)", count_records(os.path.join(out, "train-*")), n)
        return seconds

    def run_pipeline(out):
        seconds = timed([sys.executable, "-m", "pipelines.coco_to_tfrecord", "--annotations", annotations,
                         "--images", images, "--output_dir", out, "--direct_num_workers", "2",
                         "--direct_running_mode", "multi_processing"], dict(env, PYTHONPATH=ROOT))
        with open(os.path.join(out, "dataset.json")) as handle:
            check("(c)", json.load(handle)["splits"]["train"]["examples"], n)
        with open(os.path.join(out, "errors.jsonl")) as handle:
            if handle.read().strip():
                raise SystemExit("(c) rejected images of the generated set: see its errors.jsonl")
        return seconds

    converters = {"a_simple_loop_s": run_simple(1), "d_simple_loop_2_processes_s": run_simple(2),
                  "c_pipeline_s": run_pipeline}
    if not args.skip_model_garden:
        python = model_garden_python(args.output)
        if not python:
            raise SystemExit("Model Garden's converter could not be installed: (b) cannot be measured "
                             "(--skip_model_garden to leave it out)")
        converters["b_model_garden_s"] = lambda out: run_model_garden(out, python)
    # Each round runs every converter once, in an order that alternates (forwards, then backwards),
    # so neither the page cache nor the machine's drift favours whichever runs last; the figure
    # is each converter's median over the rounds.
    order, times = sorted(converters), {name: [] for name in converters}
    for round_ in range(args.repeats):
        for name in (order if round_ % 2 == 0 else order[::-1]):
            times[name].append(converters[name](fresh(name)))
    results.update({name: float(statistics.median(values)) for name, values in times.items()})
    results["rounds"] = {name: values for name, values in times.items()}
    lines = ["| converter | seconds | images/s |", "|---|---|---|"]
    for key, label in (("a_simple_loop_s", "(a) simple single-process loop"),
                       ("b_model_garden_s", "(b) TF Model Garden create_coco_tf_record, 2 processes"),
                       ("c_pipeline_s", "(c) pipelines.coco_to_tfrecord, 2 Beam workers"),
                       ("d_simple_loop_2_processes_s", "(d) the loop of (a) in 2 processes (same output as (c))")):
        if key in results:
            results[key.replace("_s", "_images_per_s")] = n / results[key]
            lines.append(f"| {label} | {results[key]:.1f} | {n / results[key]:.0f} |")
    print("\n".join(lines))
    for base in ("a_simple_loop_s", "b_model_garden_s", "d_simple_loop_2_processes_s"):
        if base in results:
            ratio = results[base] / results["c_pipeline_s"]
            results[f"c_over_{base[:1]}"] = ratio
            print(f"(c) / ({base[0]}) throughput: {ratio:.2f}x")
    if args.profile:
        report = profile_pipeline(annotations, images, work)
        print(report)
        results["profile"] = report
    with open(os.path.join(args.output, f"coco_to_tfrecord_{n}.json"), "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
