"""The labeling loop measured on real frames: which frames should people label next?

    python bench/camvid_loop.py                      # 3 seeds x (uncertain, stratified, random), 3 rounds
    python bench/camvid_loop.py --seeds 0 --rounds 1 --base_steps 50 --round_steps 20   # a quick look

Each seed starts from ``--initial`` CamVid train frames drawn at random (labelled: their true
masks) and treats the rest of train as the unlabelled pool. A base model is trained on them with
the camvid preset (``--image_size`` crops, ``--base_steps`` steps). Then, for each arm, every round
goes through the path a labeling team runs:

    segpipe segment (the arm's current model over the train frames)
    -> segpipe review --strategy ARM --count K --exclude labelled.txt
    -> the people's corrections: here the frames' true masks, written as the Label Studio JSON
       export of the chosen tasks (brush regions; void pixels left unpainted)
    -> segpipe dataset labelstudio (every class a label, unpainted pixels 255)
    -> the round's training data: every dataset labelled so far, merged
    -> fine-tuning the arm's previous model for ``--round_steps`` steps (its backup continued)
    -> the 233 test frames scored at full size.

Every arm gets the same steps per round whatever it labelled, so the arms differ only in which
frames they added. ``loop.json`` records, per seed, arm and round, the frames chosen, the frames
read back from the shards the trainer read (what really entered training), and the test scores;
``loop.md`` the learning curve (mean and spread over the seeds per arm and round) and each
round's gap between the best arm and random. The random arm's draws come from their own seed
(seed, round), never from the uncertainty ranking.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.camvid_data import build_datasets, camvid_dir  # noqa: E402
from pipelines.labeling import loop as labeling_loop  # noqa: E402

LOG = logging.getLogger("bench.camvid_loop")
ARMS = ("uncertain", "stratified", "random")


def label_studio_export(frames: list, images_dir: str, truths: dict, class_names) -> list:
    """Label Studio's JSON export after people labelled ``frames`` (their true masks as brush
    regions; void pixels unpainted)."""
    return labeling_loop.label_studio_export([os.path.join(images_dir, n) for n in frames], truths, class_names)


def label(frames: list, folder: str, images_dir: str, truths: dict, classes_json: str, class_names) -> str:
    """The frames' corrections through ``segpipe dataset labelstudio`` -> a dataset folder."""
    from pipelines import labelstudio_to_tfrecord
    os.makedirs(folder, exist_ok=True)
    export = os.path.join(folder, "export.json")
    with open(export, "w") as handle:
        json.dump(label_studio_export(frames, images_dir, truths, class_names), handle)
    labelstudio_to_tfrecord.run(["--export", export, "--images", images_dir, "--classes", classes_json,
                                 "--output_dir", os.path.join(folder, "dataset"), "--overwrite"])
    return os.path.join(folder, "dataset")


def merge_datasets(folders: list, out: str) -> str:
    """One training folder from several datasets: their shards, the class table and summed pixel
    counts (stats.json, for the class weights)."""
    from segmodel.dataset import list_shards
    os.makedirs(out, exist_ok=True)
    pixels = {}
    for k, folder in enumerate(folders):
        for path in list_shards(folder, "train"):
            shutil.copy(path, os.path.join(out, f"d{k:02d}-{os.path.basename(path)}"))
        with open(os.path.join(folder, "stats.json")) as handle:
            for name, count in json.load(handle)["pixels_per_class"].items():
                pixels[name] = pixels.get(name, 0) + count
    shutil.copy(os.path.join(folders[0], "classes.json"), os.path.join(out, "classes.json"))
    with open(os.path.join(out, "stats.json"), "w") as handle:
        json.dump({"pixels_per_class": pixels}, handle)
    return os.path.join(out, "*.tfrecord")


def train_round(config, train_glob: str, model_dir: str, previous: str | None, epochs: int) -> str:
    """Trains to ``epochs`` epochs of ``config.steps_per_epoch`` steps: from scratch, or continuing
    ``previous`` (its backup copied: weights, optimizer and step count; the poly schedule then runs
    from the step reached to zero at the new last step)."""
    from segmodel.train import train
    if previous is not None:
        shutil.copytree(previous, model_dir, ignore=shutil.ignore_patterns(
            "model.keras", "best.keras", "history.csv", "logs"))
    train(train_glob, model_dir, dataclasses.replace(config, epochs=epochs), progress=0)
    return model_dir


def score(model_dir: str, test_dir: str, names: list, expected: int) -> dict:
    from segmodel import evaluate
    model, _ = evaluate.load_model(model_dir)
    result = evaluate.evaluate(model, test_dir, names, split="test")
    if result["images"] != expected:
        raise SystemExit(f"{model_dir}: {result['images']} test frames scored, expected {expected}")
    return {"mean_iou": result["mean_iou"], "pixel_accuracy": result["pixel_accuracy"],
            "per_class_iou": result["per_class_iou"]}


def run_arm(args, config, seed: int, arm: str, base: dict, data: dict, truths: dict, names: list,
            expected_test: int) -> list:
    from pipelines import batch_segment, review
    out = os.path.join(args.output_dir, f"seed{seed}", arm)
    images_dir = os.path.join(data["source"], "train")
    labelled, folders, model = list(base["frames"]), [base["dataset"]], base["model"]
    rounds = []
    for r in range(1, args.rounds + 1):
        work = os.path.join(out, f"round{r}")
        if os.path.exists(os.path.join(work, "round.json")):  # done before a kill: reuse it
            with open(os.path.join(work, "round.json")) as handle:
                done = json.load(handle)
            rounds.append(done)
            labelled += done["chosen"]
            folders.append(os.path.join(work, "labels", "dataset"))
            model = os.path.join(work, "model")
            continue
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        batch_segment.run(["--model", model, "--input", os.path.join(images_dir, "*.png"),
                           "--output_dir", os.path.join(work, "segmentation")])
        with open(os.path.join(work, "labelled.txt"), "w") as handle:
            handle.write("".join(f"{name}\n" for name in labelled))
        review.main(["--segmentation", os.path.join(work, "segmentation"), "--output_dir", os.path.join(work, "batch"),
                     "--count", str(args.add), "--strategy", arm, "--exclude", os.path.join(work, "labelled.txt"),
                     "--seed", str(1000 * seed + r)])
        with open(os.path.join(work, "batch", "batch.txt")) as handle:
            chosen = [os.path.basename(line.strip()) for line in handle if line.strip()]
        folders.append(label(chosen, os.path.join(work, "labels"), images_dir, truths,
                             os.path.join(data["train"], "classes.json"), names))
        labelled += chosen
        train_glob = merge_datasets(folders, os.path.join(work, "train"))
        model = train_round(config, train_glob, os.path.join(work, "model"), model, args.base_epochs + r)
        result = {"round": r, "labelled": len(labelled), "chosen": chosen,
                  "trained_on": labeling_loop.record_file_names(train_glob),
                  "test": score(model, data["test"], names, expected_test)}
        with open(os.path.join(work, "round.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        shutil.rmtree(os.path.join(work, "train"))  # copies of the labelled shards
        rounds.append(result)
        LOG.info("seed %d %s round %d: %d labelled, test mean IoU %.4f", seed, arm, r, len(labelled),
                 result["test"]["mean_iou"])
    return rounds


def run_seed(args, config, seed: int, data: dict, truths: dict, names: list, expected_test: int) -> dict:
    out = os.path.join(args.output_dir, f"seed{seed}")
    base_dir = os.path.join(out, "base")
    frames = sorted(truths)
    initial = sorted(random.Random(seed).sample(frames, args.initial))
    if not os.path.exists(os.path.join(base_dir, "base.json")):
        shutil.rmtree(base_dir, ignore_errors=True)
        dataset = label(initial, os.path.join(base_dir, "labels"), os.path.join(data["source"], "train"), truths,
                        os.path.join(data["train"], "classes.json"), names)
        train_glob = merge_datasets([dataset], os.path.join(base_dir, "train"))
        model = train_round(config, train_glob, os.path.join(base_dir, "model"), None, args.base_epochs)
        result = {"frames": initial, "trained_on": labeling_loop.record_file_names(train_glob),
                  "dataset": dataset, "model": model, "test": score(model, data["test"], names, expected_test)}
        shutil.rmtree(os.path.join(base_dir, "train"))
        with open(os.path.join(base_dir, "base.json"), "w") as handle:
            json.dump(result, handle, indent=2)
    with open(os.path.join(base_dir, "base.json")) as handle:
        base = json.load(handle)
    arms = {arm: run_arm(args, config, seed, arm, base, data, truths, names, expected_test) for arm in args.arms}
    result = {"seed": seed, "settings": loop_settings(args), "base": base, "arms": arms}
    with open(os.path.join(out, "seed.json"), "w") as handle:  # one seed's rounds, kept to merge with others
        json.dump(result, handle, indent=2)
    return result


def loop_settings(args) -> dict:
    """What decides a seed's figures: seeds measured with other settings are not merged."""
    return {k: getattr(args, k) for k in ("initial", "add", "rounds", "image_size", "round_steps", "base_epochs")}


def earlier_seeds(args) -> dict:
    """Seeds measured by earlier runs (their ``seed.json`` files), for the curve beside this run's."""
    import glob
    seeds = {}
    for path in sorted(glob.glob(args.earlier)) if args.earlier else []:
        with open(path) as handle:
            seed = json.load(handle)
        if seed.get("settings") != loop_settings(args):
            raise SystemExit(f"{path}: seed {seed['seed']} was measured with {seed.get('settings')}, "
                             f"not {loop_settings(args)}")
        if any(len(seed["arms"].get(arm, [])) < args.rounds for arm in args.arms):
            raise SystemExit(f"{path}: seed {seed['seed']} lacks some of the arms {args.arms} or rounds")
        seeds[seed["seed"]] = seed
    return seeds


def curve(seeds: dict, arms, rounds: int) -> dict:
    """Per arm and round (0 = the base model): mean and spread (min, max, std) of test mean IoU."""
    table = {}
    for arm in arms:
        rows = []
        for r in range(rounds + 1):
            values = [s["base"]["test"]["mean_iou"] if r == 0 else s["arms"][arm][r - 1]["test"]["mean_iou"]
                      for s in seeds.values()]
            labelled = [len(s["base"]["frames"]) if r == 0 else s["arms"][arm][r - 1]["labelled"]
                        for s in seeds.values()]
            rows.append({"round": r, "labelled": int(np.mean(labelled)), "mean": float(np.mean(values)),
                         "min": float(np.min(values)), "max": float(np.max(values)),
                         "std": float(np.std(values)), "values": values})
        table[arm] = rows
    return table


def gaps(table: dict, rounds: int) -> list:
    """Each round: the best arm's mean minus random's, and whether it exceeds the spread (the
    larger of the two arms' seed standard deviations)."""
    if "random" not in table:
        return []
    result = []
    for r in range(1, rounds + 1):
        best = max((a for a in table if a != "random"), key=lambda a: table[a][r]["mean"], default=None)
        if best is None:
            continue
        gap = table[best][r]["mean"] - table["random"][r]["mean"]
        spread = max(table[best][r]["std"], table["random"][r]["std"])
        several = len(table["random"][r]["values"]) > 1  # one seed has no spread to exceed
        result.append({"round": r, "best": best, "gap": gap, "spread": spread,
                       "exceeds_spread": abs(gap) > spread if several else None})
    return result


def markdown(table: dict, gap_rows: list, seeds: int) -> str:
    arms = list(table)
    lines = ["| round | labelled | " + " | ".join(f"{a} (mean ± std, min-max)" for a in arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for r, row in enumerate(table[arms[0]]):
        cells = [f"{table[a][r]['mean']:.3f} ± {table[a][r]['std']:.3f} ({table[a][r]['min']:.3f}-"
                 f"{table[a][r]['max']:.3f})" for a in arms]
        lines.append(f"| {r} | {row['labelled']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Test mean IoU over {seeds} seeds. Best arm minus random per round:")
    lines.append("")
    for g in gap_rows:
        verdict = {True: "exceeds it", False: "within it", None: "one seed, no spread"}[g["exceeds_spread"]]
        lines.append(f"- round {g['round']}: {g['best']} {g['gap']:+.3f} (spread {g['spread']:.3f}: {verdict})")
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", default=None, help="the CamVid folder (default: ../shared/testdata/camvid)")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "bench_output", "camvid_loop"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--initial", type=int, default=40, help="labelled frames at the start")
    parser.add_argument("--add", type=int, default=40, help="frames labelled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=256, help="training crops (smaller than the preset's, for budget)")
    parser.add_argument("--round_steps", type=int, default=120, help="fine-tuning steps per round, every arm alike")
    parser.add_argument("--base_epochs", type=int, default=3, help="the base model's steps: base_epochs x round_steps")
    parser.add_argument("--earlier", default="", help="a glob of seed.json files from earlier runs with the same "
                        "settings, merged into the curve (the seeds run now replace any of the same number)")
    args = parser.parse_args(argv)
    args.output_dir = os.path.abspath(args.output_dir)
    args.arms = [a for a in args.arms.split(",") if a]
    if any(a not in ARMS for a in args.arms):
        raise SystemExit(f"--arms must be among {ARMS}")
    source = camvid_dir(args.camvid)
    counts = {split: len([f for f in os.listdir(os.path.join(source, split)) if f.endswith(".png")])
              for split in ("train", "test")}
    data = dict(build_datasets(source, os.path.join(args.output_dir, "data"), counts), source=source)

    from segcli.train import PRESETS, TrainConfig
    config = TrainConfig(**dict(PRESETS["camvid"], image_size=args.image_size, steps_per_epoch=args.round_steps,
                                max_steps=0))
    with open(os.path.join(data["train"], "classes.json")) as handle:
        names = [c["name"] for c in sorted(json.load(handle)["classes"], key=lambda c: c["index"])]
    truths = labeling_loop.truth_masks(data["train"])
    seeds = earlier_seeds(args)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        seeds[seed] = run_seed(args, config, seed, data, truths, names, counts["test"])
    table = curve(seeds, args.arms, args.rounds)
    gap_rows = gaps(table, args.rounds)
    result = {"settings": vars(args), "config": dataclasses.asdict(config), "test_frames": counts["test"],
              "seeds": seeds, "curve": table, "gaps": gap_rows}
    with open(os.path.join(args.output_dir, "loop.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    text = markdown(table, gap_rows, len(seeds))
    with open(os.path.join(args.output_dir, "loop.md"), "w") as handle:
        handle.write(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
