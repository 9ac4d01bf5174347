"""One round of the labeling loop, run end to end in the demo's world (where the truth is known).

    trained model -> segment an unlabeled pool -> segpipe review picks K images (most uncertain;
    and, as the baseline, K at random) -> people "correct" them: here the pool's ground truth,
    written as the Label Studio export a labeling tool would hand back -> segpipe dataset
    labelstudio -> the corrected images join the training data -> fine-tune -> evaluate on
    held-back scenes no arm was trained or selected on.

A third arm fine-tunes for the same epochs on the original data only, so that what the new labels
bring is told apart from what more training brings. Results: ``OUT/loop/loop.json``.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np


def parsed_records(data: str, split: str = "train"):
    """The records of a dataset (a folder or a glob of shards), parsed as the trainer reads them."""
    import tensorflow as tf

    from segmodel import dataset, features
    for path in dataset.list_shards(data, split):
        for raw in tf.data.TFRecordDataset([path]):
            yield tf.io.parse_single_example(raw, features.feature_spec())


def truth_masks(dataset_dir: str) -> dict:
    """{file name: class mask} of a dataset folder's records (read as the trainer reads them)."""
    import io

    from PIL import Image

    from segmodel import features
    return {record[features.IMAGE_FILENAME].numpy().decode():
            np.asarray(Image.open(io.BytesIO(record[features.MASK_ENCODED].numpy())))
            for record in parsed_records(dataset_dir)}


def record_file_names(data: str, split: str = "train") -> list:
    """The image file names of a dataset's records (a folder or a glob of shards), read back from
    the shards: what a training run on ``data`` really sees."""
    from segmodel import features
    return sorted(record[features.IMAGE_FILENAME].numpy().decode() for record in parsed_records(data, split))


def label_studio_export(chosen: list, truths: dict, class_names) -> list:
    """The JSON export Label Studio gives after people corrected the chosen images: one
    annotation per task, brush regions of the true mask (segformat.label_studio's encoding)."""
    from segformat.label_studio import brush_results, image_url
    items = []
    for k, path in enumerate(chosen):
        mask = truths[os.path.basename(path)]
        items.append({"id": k + 1, "data": {"image": image_url(path)},
                      "annotations": [{"id": k + 1, "was_cancelled": False, "result": brush_results(mask, class_names),
                                       "updated_at": "2026-11-29T00:00:00Z"}]})
    return items


def fine_tune(out: str, arm: str, model_dir: str, dataset_dir: str, extra: str, epochs: int) -> str:
    """Continues the trained model's run (its backup copied) for more epochs on the original
    training shards plus ``extra`` (a dataset folder, or "" for none) and exports the last epoch:
    no validation-based choice, since the arms are compared on held-back scenes."""
    from segmodel import train
    from segmodel.dataset import list_shards
    arm_dir = f"{out}/{arm}"
    data = f"{arm_dir}/train"
    os.makedirs(data, exist_ok=True)
    shards = [(p, "base") for p in list_shards(dataset_dir, "train")]
    shards += [(p, "new") for p in list_shards(extra, "train")] if extra else []
    for path, origin in shards:
        shutil.copy(path, f"{data}/{origin}-{os.path.basename(path)}")
    shutil.copy(f"{dataset_dir}/classes.json", f"{data}/classes.json")
    shutil.copytree(model_dir, f"{arm_dir}/model",
                    ignore=shutil.ignore_patterns("model.keras", "best.keras", "history.csv", "logs"))
    with open(f"{model_dir}/train_config.json") as handle:
        trained_for = json.load(handle)["epochs"]
    train.main(["--progress", "0", "--train_data", f"{data}/*.tfrecord", "--model_dir", f"{arm_dir}/model", "--config", "tiny", "--epochs", str(trained_for + epochs), "--image_size", "128"])
    return f"{arm_dir}/model"


def run_loop(out: str, model_dir: str, dataset_dir: str, holdout_annotations: str, holdout_images: str,
             pool_size: int, count: int, epochs: int, image_size, seed: int) -> dict:
    from pipelines import batch_segment, coco_to_tfrecord, labelstudio_to_tfrecord, review
    from pipelines.demo_world import scenes as demo_data
    from segmodel import evaluate
    from segmodel.exported import class_names
    loop = f"{out}/loop"
    pool = demo_data.write_coco_dataset(f"{loop}/pool", pool_size, image_size, seed + 7, crowd_every=10 ** 9,
                                        first_id=10 ** 6)
    coco_to_tfrecord.run(["--annotations", pool, "--images", f"{loop}/pool/images", "--output_dir",
                          f"{loop}/pool_truth", "--overwrite"])
    coco_to_tfrecord.run(["--annotations", holdout_annotations, "--images", holdout_images, "--output_dir",
                          f"{loop}/test", "--overwrite"])
    truths = truth_masks(f"{loop}/pool_truth")
    batch_segment.run(["--model", model_dir, "--input", f"{loop}/pool/images/*", "--output_dir",
                       f"{loop}/pool_segmentation", "--tile_size", "512"])
    names = list(class_names(model_dir))
    test = f"{loop}/test/train-*.tfrecord"

    def score(model):
        loaded, classes = evaluate.load_model(model)
        return evaluate.evaluate(loaded, test, classes, "train")["mean_iou"]
    result = {"pool": pool_size, "labeled": count, "epochs": epochs, "base": score(model_dir),
              "base_frames": record_file_names(dataset_dir), "chosen": {}, "trained_on": {}}
    for arm in ("uncertain", "random"):
        review.main(["--segmentation", f"{loop}/pool_segmentation", "--output_dir", f"{loop}/{arm}/batch",
                     "--count", str(count), "--strategy", arm, "--seed", str(seed)])
        with open(f"{loop}/{arm}/batch/batch.txt") as handle:
            chosen = handle.read().split()
        with open(f"{loop}/{arm}/export.json", "w") as handle:
            json.dump(label_studio_export(chosen, truths, names), handle)
        labelstudio_to_tfrecord.run(["--export", f"{loop}/{arm}/export.json", "--images", f"{loop}/pool/images",
                                     "--classes", f"{model_dir}/classes.json", "--output_dir",
                                     f"{loop}/{arm}/corrected", "--overwrite"])
        result[arm] = score(fine_tune(loop, arm, model_dir, dataset_dir, f"{loop}/{arm}/corrected", epochs))
        result["chosen"][arm] = sorted(os.path.basename(path) for path in chosen)
    result["no_new_labels"] = score(fine_tune(loop, "no_new_labels", model_dir, dataset_dir, "", epochs))
    for arm in ("uncertain", "random", "no_new_labels"):  # what each arm's fine-tuning read
        result["trained_on"][arm] = record_file_names(f"{loop}/{arm}/train/*.tfrecord")
    with open(f"{loop}/test/stats.json") as handle:
        result["test_images"] = json.load(handle)["images_written"]
    with open(f"{loop}/loop.json", "w") as handle:
        json.dump(result, handle, indent=2)
    return result
