"""CamVid from scratch: the raw folders -> datasets -> training with a preset for a fixed wall-clock
budget -> the 233 test frames scored at full 480x360 at fixed points of training time.

    python bench/camvid.py                      # 15/30/60/120 minutes, --config camvid
    python bench/camvid.py --minutes 5,10 --output_dir bench_output/camvid_short

Each split goes through ``segpipe dataset masks`` with ``examples/camvid_classes.json`` (void 11
-> 255); training is ``segmodel.train.train`` on the train split, choosing on val (best.keras),
with a clock that saves a snapshot of the weights at each point of training time (validation
included: it is part of training) and stops at the last. The clock also drives the learning
rate: the preset's poly decay over the training time, so it ends with the budget on any host
(``--steps N``: over N steps instead, for ablations). A killed run resumes where it stopped
when the same command is given again: training from its backup, the clock from clock.json (an
epoch cut short by the kill is trained again and its time counted once).

Before it prints a figure it checks its own outputs: every split converted without an error
record (367/101/233 frames), 233 test images scored per model. The output: results.json and
the table (results.md) under --output_dir, the test figures of each snapshot and of the model
chosen on val, beside the published rows. Then, for the model chosen on val, ``--tta`` chooses
test-time views on val and ``--offsets`` fits class score offsets on val; each is scored on
test as one more row (also on a finished run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.camvid_data import PUBLISHED, SPLITS, build_datasets, camvid_dir  # noqa: E402

LOG = logging.getLogger("bench.camvid")


def clock_rate(initial: float):
    """A learning-rate schedule whose value is a variable the training clock sets (the optimizer
    reads it in each step; it adds no optimizer variable, so a backup restores as with poly)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="segpipe_bench")
    class ClockRate(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, initial):
            self.rate = tf.Variable(float(initial), trainable=False, dtype=tf.float32)

        def __call__(self, step):
            return self.rate.read_value()

        def get_config(self):
            return {"initial": float(self.rate.numpy())}

    return ClockRate(initial)


def training_clock(state_path: str, snapshot_dir: str, points_s: list, learning_rate: float | None = None,
                   rate=None, timer=time.perf_counter):
    """A Keras callback that counts training wall time across resumes (clock.json, written after
    each epoch's backup), saves the weights as ``at_<minutes>min.keras`` when the count passes each
    of ``points_s`` and stops training at the last one.

    With ``learning_rate`` and ``rate`` (a clock_rate the optimizer reads), the clock drives the
    schedule: before each step ``rate`` is set to the preset's poly decay over the clock instead
    of the steps,
    ``learning_rate * (1 - t / T) ** POLY_POWER`` at t seconds of a T-second budget (the last
    point), so it reaches zero when the time does, however the host's pace varies. Each epoch's
    end is logged as (epoch, seconds, step) in ``epoch_ends``."""
    import keras
    import tensorflow as tf

    from segmodel.exported import save_atomic
    from segmodel.train import POLY_POWER

    def load():
        if tf.io.gfile.exists(state_path):
            with tf.io.gfile.GFile(state_path) as handle:
                return json.load(handle)
        return {"elapsed_s": 0.0, "snapshots": {}}

    class TrainingClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.state = load()
            self.base, self.start = self.state["elapsed_s"], timer()

        def elapsed(self):
            return self.base + timer() - self.start

        def snapshot(self, point):
            name = f"at_{point / 60:g}min"
            save_atomic(self.model, f"{snapshot_dir}/{name}.keras")
            self.state["snapshots"][name] = {"elapsed_s": self.elapsed(), "point_s": point,
                                             "step": int(self.model.optimizer.iterations.numpy())}
            self.save()
            LOG.info("snapshot %s at %.0f s of training, step %d", name, self.elapsed(),
                     self.state["snapshots"][name]["step"])

        def on_train_batch_begin(self, batch, logs=None):
            if rate is not None:
                left = max(0.0, 1.0 - self.elapsed() / points_s[-1])
                rate.rate.assign(learning_rate * left ** POLY_POWER)

        def on_train_batch_end(self, batch, logs=None):
            now = self.elapsed()
            for point in points_s:
                if now >= point and f"at_{point / 60:g}min" not in self.state["snapshots"]:
                    self.snapshot(point)
            if now >= points_s[-1]:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.state["epoch"] = epoch + 1
            self.state.setdefault("epoch_ends", []).append(
                [epoch + 1, self.elapsed(), int(self.model.optimizer.iterations.numpy())])
            self.save()

        def on_train_end(self, logs=None):
            # the step budget ran out first: the last point is the trained model, at the time it took
            last = f"at_{points_s[-1] / 60:g}min"
            if last not in self.state["snapshots"]:
                self.snapshot(points_s[-1])
            self.save()

        def save(self):
            self.state["elapsed_s"] = self.elapsed()
            temp = f"{state_path}.tmp"
            with tf.io.gfile.GFile(temp, "w") as handle:
                json.dump(self.state, handle, indent=2)
            tf.io.gfile.rename(temp, state_path, overwrite=True)

    return TrainingClock()


def plan(out: str, config, budget_s: float, fixed_steps: int = 0) -> dict:
    """How training is scheduled, kept in plan.json so that a resumed run keeps it: by default the
    clock drives the learning rate (training_clock) for ``budget_s`` seconds, so the schedule ends
    with the budget on any host; ``fixed_steps``: the preset's poly decay over that many steps,
    whatever the host's pace (ablations compared step for step)."""
    path = f"{out}/plan.json"
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    if fixed_steps:
        result = {"max_steps": fixed_steps, "epochs": math.ceil(fixed_steps / config.steps_per_epoch),
                  "fixed_steps": True}
    else:
        result = {"schedule": "clock", "budget_s": budget_s, "learning_rate": config.learning_rate}
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    return result


def train_on_the_clock(out: str, data: dict, config, points: list, timer=time.perf_counter, callbacks=()) -> dict:
    """Trains ``config`` on the train split, choosing on val, under the training clock, as
    ``out/plan.json`` says (``plan``): with the clock's schedule (a rate the clock sets before
    each step; no step budget, the clock stops at the last point) or a fixed number of steps.
    Returns the plan."""
    import dataclasses

    from segmodel.train import train
    with open(f"{out}/plan.json") as handle:
        budget = json.load(handle)
    if os.path.exists(f"{out}/model/model.keras"):
        return budget
    if budget.get("schedule") == "clock":
        # epochs: more than the clock allows (it stops training at the last point)
        run_config = dataclasses.replace(config, max_steps=0, epochs=10**6)
        rate = clock_rate(budget["learning_rate"])
    else:
        run_config = dataclasses.replace(config, max_steps=budget["max_steps"], epochs=budget["epochs"])
        rate = None
    LOG.info("plan: %s", budget)
    clock = training_clock(f"{out}/clock.json", f"{out}/snapshots", points, learning_rate=budget.get("learning_rate"),
                           rate=rate, timer=timer)
    train(data["train"], f"{out}/model", run_config, val_data=data["val"], progress=2,
          extra_callbacks=[clock, *callbacks], learning_rate=rate)
    return budget


def machine() -> dict:
    import platform

    import tensorflow as tf
    return {"cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu": platform.processor() or platform.machine(),
            "gpus": len(tf.config.list_physical_devices("GPU")), "tensorflow": tf.__version__}


def score(model_path: str, data_dir: str, names: list, split: str = "test", tta=((1.0,), False)) -> dict:
    """``segmodel.evaluate`` of the model at ``model_path`` on a split, through the test-time
    views ``tta`` = (scales, flip) (``segmodel.tta``; the default is the image alone)."""
    import keras

    from segmodel.evaluate import evaluate
    from segmodel.exported import register_custom_objects
    from segmodel.tta import with_test_time_augmentation
    register_custom_objects()
    model = with_test_time_augmentation(keras.models.load_model(model_path, compile=False), *tta)
    result = evaluate(model, data_dir, names, split=split)
    if result["images"] != SPLITS[split]:
        raise SystemExit(f"{model_path}: {result['images']} {split} images scored, expected {SPLITS[split]}")
    return result


KEYS = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")


def figures(result: dict) -> dict:
    return {**{k: result[k] for k in KEYS}, "iou": result["per_class_iou"], "images": result["images"]}


def scored(model_path: str, data: dict, names: list, model: str, training: str, val: bool = False,
           tta=((1.0,), False)) -> dict:
    """A table row: the model's test figures, and with ``val`` its val figures too (what an
    ablation is judged on: nothing is chosen on the test frames)."""
    row = {"model": model, "training": training, **figures(score(model_path, data["test"], names, tta=tta))}
    if val:
        row["val"] = figures(score(model_path, data["val"], names, split="val", tta=tta))
    return row


# The test-time views tried on val for --tta (scales, flip), all with flips (the street scenes
# are as likely mirrored): upscaled views for thin classes, one downscaled for context.
TTA_CANDIDATES = (((1.0,), True), ((1.0, 1.25), True), ((1.0, 1.25, 1.5), True), ((0.75, 1.0, 1.25, 1.5), True))


def choose_tta(report: dict, out: str, data: dict, names: list) -> dict:
    """Test-time augmentation for the model chosen on val: each of TTA_CANDIDATES scored on the
    101 val frames, the best val mean IoU (the single view included: the best-on-val row's val
    figures) scored on the test frames as one more row. Nothing is chosen on test."""
    best = next(row for row in report["rows"] if row["model"].endswith("(best on val)"))
    candidates = []
    for scales, flip in (((1.0,), False),) + TTA_CANDIDATES:  # the single view again: the baseline of the time
        started = time.perf_counter()
        on_val = figures(score(f"{out}/model/model.keras", data["val"], names, split="val", tta=(scales, flip)))
        candidates.append({"scales": list(scales), "flip": flip, "val": on_val,
                           "seconds": time.perf_counter() - started})
        LOG.info("test-time scales %s, flip %s: val mean IoU %.4f in %.0f s", scales, flip, on_val["mean_iou"],
                 candidates[-1]["seconds"])
    if abs(candidates[0]["val"]["mean_iou"] - best["val"]["mean_iou"]) > 1e-9:
        raise SystemExit(f"the single view scores val mean IoU {candidates[0]['val']['mean_iou']} now, "
                         f"{best['val']['mean_iou']} in the run: not the same model or data")
    chosen = max(candidates, key=lambda c: c["val"]["mean_iou"])
    views = f"scales {','.join(f'{s:g}' for s in chosen['scales'])}{' + flips' if chosen['flip'] else ''}"
    row = best if chosen is candidates[0] else {
        **scored(f"{out}/model/model.keras", data, names, best["model"].replace("(best on val)", f"(best on val, {views})"),
                 f"test-time views chosen on val of {len(candidates)}", tta=(chosen["scales"], chosen["flip"])),
        "val": chosen["val"]}
    report["tta"] = {"candidates": candidates, "chosen": {"scales": chosen["scales"], "flip": chosen["flip"]}}
    if row is not best:
        at = next(i for i, r in enumerate(report["rows"]) if r["training"] == "published")
        report["rows"].insert(at, row)
    return report


def published_rows() -> list:
    return [{"model": model, "training": "published", "mean_iou": value, "pixel_accuracy": None,
             "mean_accuracy": None, "frequency_weighted_iou": None, "iou": iou}
            for model, value, iou in PUBLISHED]


# Class score offsets, fitted on val (--offsets): a constant added to each class's score before
# the argmax moves the decision between a rare class and its neighbours (the weighted loss sets it
# for the pixels' likelihood, not for IoU). Searched class by class over OFFSET_GRID, two sweeps.
OFFSET_GRID = tuple(x / 4 for x in range(-8, 9))  # -2 .. 2 in steps of 0.25 (log-probability units)


def _mean_iou(labels, predicted, num_classes: int) -> float:
    """Mean IoU over the classes present in ``labels`` or ``predicted``."""
    import numpy as np
    cm = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float(np.mean(np.diag(cm)[union > 0] / union[union > 0]))


def fit_class_offsets(scores, labels, num_classes: int, grid=OFFSET_GRID, sweeps: int = 2) -> tuple:
    """(offsets, mean IoU) maximising the mean IoU of argmax(scores + offsets) (scores: [P, C]
    float32 of the labelled pixels, labels: [P]) by coordinate ascent over ``grid``, class after
    class, ``sweeps`` times. Offsets start at 0; a class keeps its offset unless another value of
    the grid scores strictly higher. With the other offsets fixed, a pixel goes to class c when
    its shifted score beats the best other class's, so each trial is one comparison."""
    import numpy as np
    offsets = np.zeros(num_classes, np.float32)
    best = _mean_iou(labels, np.argmax(scores, axis=1), num_classes)
    for _ in range(sweeps):
        for c in range(num_classes):
            others = scores + offsets
            others[:, c] = -np.inf
            rival, rival_score = np.argmax(others, axis=1), np.max(others, axis=1)
            del others
            for value in grid:
                predicted = np.where(scores[:, c] + np.float32(value) > rival_score, c, rival)
                score = _mean_iou(labels, predicted, num_classes)
                if score > best:
                    best, offsets[c] = score, value
    return [float(v) for v in offsets], best


def labelled_scores(model, data_dir: str, split: str, num_classes: int) -> tuple:
    """The model's scores ([P, C] float32) and labels ([P]) of every labelled pixel of a split."""
    import numpy as np

    from segmodel.dataset import evaluation_dataset
    scores, labels = [], []
    for image, mask in evaluation_dataset(data_dir, split):
        truth = mask.numpy()[0, ..., 0]
        keep = truth < num_classes
        scores.append(np.asarray(model(image, training=False), np.float32)[0][keep])
        labels.append(truth[keep].astype(np.int64))
    return np.concatenate(scores), np.concatenate(labels)


def with_offsets(model, offsets):
    """``model`` with ``offsets`` added to its class scores (the same interface)."""
    import keras
    import numpy as np
    pixels = keras.Input((None, None, 3), name="pixels")
    shifted = model(pixels) + keras.ops.convert_to_tensor(np.asarray(offsets, np.float32))
    return keras.Model(pixels, shifted, name=f"{model.name}_offsets")


def choose_offsets(report: dict, out: str, data: dict, names: list) -> dict:
    """Class score offsets for the model chosen on val, fitted on the 101 val frames
    (fit_class_offsets), scored on the test frames as one more row. Nothing is chosen on test."""
    import keras

    from segmodel.evaluate import evaluate
    from segmodel.exported import register_custom_objects
    register_custom_objects()
    best = next(row for row in report["rows"] if row["model"].endswith("(best on val)"))
    model = keras.models.load_model(f"{out}/model/model.keras", compile=False)
    started = time.perf_counter()
    scores, labels = labelled_scores(model, data["val"], "val", len(names))
    import numpy as np
    before = _mean_iou(labels, np.argmax(scores, axis=1), len(names))
    if abs(before - best["val"]["mean_iou"]) > 1e-6:
        raise SystemExit(f"the model scores val mean IoU {before} now, {best['val']['mean_iou']} in the run")
    offsets, after = fit_class_offsets(scores, labels, len(names))
    del scores, labels
    LOG.info("class offsets fitted on val in %.0f s: %s (val mean IoU %.4f -> %.4f)",
             time.perf_counter() - started, offsets, before, after)
    shifted = with_offsets(model, offsets)
    row = {"model": best["model"].replace("(best on val)", "(best on val, class offsets fitted on val)"),
           "training": "offsets chosen on val",
           **figures(evaluate(shifted, data["test"], names, split="test")),
           "val": figures(evaluate(shifted, data["val"], names, split="val"))}
    if row["images"] != SPLITS["test"]:
        raise SystemExit(f"{row['images']} test images scored, expected {SPLITS['test']}")
    report["offsets"] = {"offsets": dict(zip(names, offsets)), "val_mean_iou_before": before,
                         "val_mean_iou_after": after, "grid": list(OFFSET_GRID)}
    at = next(i for i, r in enumerate(report["rows"]) if r["training"] == "published")
    report["rows"].insert(at, row)
    return report


def save_report(report: dict, out: str, names: list) -> None:
    with open(f"{out}/results.json", "w") as handle:
        json.dump(report, handle, indent=2)
    with open(f"{out}/results.md", "w") as handle:
        handle.write(table(report["rows"], names) + "\n")


def table(rows: list, names: list) -> str:
    short = {"sign_symbol": "sign", "pedestrian": "ped.", "bicyclist": "bicycl.", "pavement": "pavem."}
    head = ["model", "training", "mean IoU", "pixel acc.", "mean acc.", "f.w. IoU"] + \
        [short.get(n, n) for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], row["training"]] + [f"{row[k]:.3f}" if isinstance(row[k], float) else "-"
                                                   for k in ("mean_iou", "pixel_accuracy", "mean_accuracy",
                                                             "frequency_weighted_iou")]
        cells += [f"{row['iou'][n]:.2f}" if row.get("iou") and row["iou"][n] is not None else "-" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", default=None, help="the CamVid folder (default: ../shared/testdata/camvid)")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_output", "camvid"))
    parser.add_argument("--minutes", default="15,30,60,120", help="points of training time; training stops at the last")
    parser.add_argument("--steps", type=int, default=0,
                        help="train exactly this many steps instead of filling the time budget (ablations: "
                             "the same steps on any host; training still stops at the last --minutes point)")
    parser.add_argument("--config", default="camvid", help="the training preset")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field (e.g. --set class_weights=false), for ablations")
    parser.add_argument("--showcase", action="store_true", help="then segment the test frames and make the report")
    parser.add_argument("--tta", action="store_true",
                        help="then choose test-time views (flips, scales) on val for the model chosen on val and "
                             "score them on test (also on a finished run)")
    parser.add_argument("--offsets", action="store_true",
                        help="then fit class score offsets on val for the model chosen on val and score them on "
                             "test (also on a finished run)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    source = camvid_dir(args.camvid)
    points = sorted(float(m) * 60 for m in args.minutes.split(","))

    data = build_datasets(source, f"{out}/data")  # checks the counts and that no input was rejected

    from segcli.train import make_parser as train_parser, config_from_args
    train_argv = ["--train_data", data["train"], "--model_dir", f"{out}/model", "--config", args.config]
    for item in args.set:
        field, _, value = item.partition("=")
        train_argv += [f"--{field}", value]
    config = config_from_args(train_parser().parse_args(train_argv))
    with open(f"{data['train']}/classes.json") as handle:
        names = [c["name"] for c in json.load(handle)["classes"]]
    plan(out, config, points[-1], args.steps)
    started = time.time()
    budget = train_on_the_clock(out, data, config, points)
    LOG.info("training: %.0f s of wall time in this process", time.time() - started)
    with open(f"{out}/clock.json") as handle:
        clock_state = json.load(handle)

    if os.path.exists(f"{out}/results.json") and os.path.exists(f"{out}/model/model.keras"):
        with open(f"{out}/results.json") as handle:  # scored before: the same figures
            report = json.load(handle)
        if args.tta and "tta" not in report:
            save_report(choose_tta(report, out, data, names), out, names)
        if args.offsets and "offsets" not in report:
            save_report(choose_offsets(report, out, data, names), out, names)
        print_report(report, names)
        if args.showcase:
            showcase(out, source, data)
        return report
    label = " ".join([f"segpipe --config {args.config}"] + [f"--{item}" for item in args.set])
    rows = []
    for point in points:
        name = f"at_{point / 60:g}min"
        info = clock_state["snapshots"][name]
        # the step budget ran out before the clock reached the point: the row is the whole run
        when = name.replace("_", " ") if info["elapsed_s"] >= point else f"all {info['step']} steps"
        rows.append(scored(f"{out}/snapshots/{name}.keras", data, names, f"{label} ({when})",
                           f"{info['elapsed_s'] / 60:.0f} min, step {info['step']}", val=point == points[-1]))
    history = open(f"{out}/model/history.csv").read().splitlines()
    rows.append(scored(f"{out}/model/model.keras", data, names, f"{label} (best on val)",
                       "chosen on the 101 val frames", val=True))
    rows += published_rows()
    report = {"machine": machine(), "config": dataclasses.asdict(config), "plan": budget, "clock": clock_state,
              "datasets": data, "rows": rows, "epochs_logged": len(history) - 1,
              "command": " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:]))}
    if args.tta:
        report = choose_tta(report, out, data, names)
    if args.offsets:
        report = choose_offsets(report, out, data, names)
    save_report(report, out, names)
    print_report(report, names)
    if args.showcase:
        showcase(out, source, data)
    return report


THIN = ("pole", "sign_symbol", "fence", "pedestrian", "bicyclist")


def print_report(report: dict, names: list) -> None:
    cores = report["machine"]["usable_cores"]
    print(f"CamVid test (233 frames at 480x360), trained from scratch on {cores} CPU cores "
          f"({report['machine']['cpu']}, {report['machine']['gpus']} GPUs):")
    print(table(report["rows"], names))
    for row in report["rows"]:
        if row.get("iou") and row["training"] != "published":
            thin = {n: row["iou"][n] for n in THIN}
            print(f"{row['model']}: mean IoU {row['mean_iou']:.3f} (target 0.55: {'met' if row['mean_iou'] >= 0.55 else 'not met'}); "
                  f"thin classes >= 0.30: {'all' if min(thin.values()) >= 0.30 else 'not all'} "
                  f"({', '.join(f'{n} {v:.2f}' for n, v in thin.items())})")
        if row.get("val"):
            val = row["val"]
            print(f"  on val ({val['images']} frames): mean IoU {val['mean_iou']:.3f}; "
                  + ", ".join(f"{n} {val['iou'][n]:.2f}" for n in names if val["iou"][n] is not None))
    if "offsets" in report:
        fitted = report["offsets"]
        print(f"class offsets fitted on val: {', '.join(f'{n} {v:+g}' for n, v in fitted['offsets'].items())} "
              f"(val mean IoU {fitted['val_mean_iou_before']:.3f} -> {fitted['val_mean_iou_after']:.3f})")
    for candidate in report.get("tta", {}).get("candidates", []):
        val = candidate["val"]
        thin = ", ".join(f"{n} {val['iou'][n]:.2f}" for n in THIN)
        print(f"test-time scales {candidate['scales']}{' + flips' if candidate['flip'] else ''}: "
              f"val mean IoU {val['mean_iou']:.3f} ({thin}); "
              f"{candidate['seconds'] / report['tta']['candidates'][0]['seconds']:.1f}x the single view's time")


def showcase(out: str, source: str, data: dict) -> str:
    """The real-data report: the chosen model segments the 233 test frames (segpipe segment),
    is scored on them (segpipe evaluate) and segpipe report shows it all, with a screenshot of the
    page in headless Chromium when it is installed (make browser)."""
    def segpipe(*args):
        subprocess.run([sys.executable, "-m", "segcli.main", *args], check=True, cwd=ROOT)
    segpipe("segment", "--model", f"{out}/model", "--input", f"{source}/test/*.png", "--output_dir",
            f"{out}/segment_test", "--overlays", "--skip_existing")
    segpipe("evaluate", "--model", f"{out}/model", "--data", data["test"], "--split", "test",
            "--output", f"{out}/test_metrics.json")
    segpipe("report", "--output", f"{out}/report", "--dataset", data["train"], "--model", f"{out}/model",
            "--metrics", f"{out}/test_metrics.json", "--segmentation", f"{out}/segment_test",
            "--data", f"{data['test']}/test-*.tfrecord")
    page = f"{out}/report/index.html"
    import shutil
    if shutil.which("chromium") and shutil.which("chromedriver"):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get("file://" + page)
            driver.set_window_size(1200, driver.execute_script("return document.body.scrollHeight") + 100)
            driver.save_screenshot(f"{out}/report/screenshot.png")
        finally:
            driver.quit()
    print(f"report: {page}")
    return page


if __name__ == "__main__":
    main()
