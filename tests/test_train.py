"""Training and evaluation end to end on generated demo scenes (tiny configuration, CPU)."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from segmodel import evaluate, train
from segmodel.config import PRESETS, TrainConfig


def test_short_training_run_learns(trained_model, demo_dataset, tmp_path):
    model_dir, history = trained_model
    for name in ("model.keras", "best.keras", "classes.json", "history.csv", "train_config.json"):
        assert (model_dir / name).exists(), name
    assert list((model_dir / "logs").rglob("events.out.tfevents*"))
    output = tmp_path / "metrics.json"
    result = evaluate.main(["--model", str(model_dir), "--data", str(demo_dataset / "val-*.tfrecord"),
                            "--output", str(output)])
    written = json.loads(output.read_text())
    # evaluated first so that a miss says which class fell short
    assert max(history["val_mean_iou"]) >= 0.8, (history["val_mean_iou"], written.get("per_class_iou"))
    assert set(written) >= {"mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou",
                            "per_class_iou", "confusion_matrix"}
    assert set(written["per_class_iou"]) == {"background", "road", "building", "water"}
    # The exported model is the best checkpoint, so evaluate reproduces the best validation score.
    assert result["mean_iou"] == pytest.approx(max(history["val_mean_iou"]), abs=2e-3)


class Interrupt(Exception):
    pass


def test_training_resumes_from_the_last_checkpoint(demo_dataset, tmp_path):
    config = TrainConfig(**{**PRESETS["tiny"], "epochs": 4, "steps_per_epoch": 2, "image_size": 64})

    class KillAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt()

    data = str(demo_dataset / "train-*.tfrecord")
    with pytest.raises(Interrupt):
        train.train(data, str(tmp_path), config, extra_callbacks=[KillAfterEpoch()])
    assert not (tmp_path / "model.keras").exists()
    history = train.train(data, str(tmp_path), config)
    assert len(history["loss"]) == 2  # epochs 3 and 4 only
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model(np.zeros((1, 50, 70, 3), np.uint8)).shape == (1, 50, 70, 4)


def test_max_steps_budget(demo_dataset, tmp_path):
    config = TrainConfig(**{**PRESETS["tiny"], "epochs": 3, "steps_per_epoch": 4, "max_steps": 6,
                            "image_size": 64})
    history = train.train(str(demo_dataset / "train-*.tfrecord"), str(tmp_path), config)
    assert len(history["loss"]) == 2  # stopped inside the second epoch at step 6


def test_presets_and_flags():
    args = train.make_parser().parse_args(["--train_data", "x", "--model_dir", "m", "--config", "tiny",
                                           "--epochs", "3", "--batch_norm", "false"])
    config = train.config_from_args(args)
    assert config.epochs == 3 and config.width == 0.125 and config.batch_norm is False
    assert train.config_from_args(train.make_parser().parse_args(
        ["--train_data", "x", "--model_dir", "m"])).backbone_weights == "imagenet"


def test_deterministic_training_repeats_exactly(demo_dataset, tmp_path):
    """--deterministic true: two runs with one seed end with bit-identical losses and weights.
    In a subprocess: TensorFlow's op determinism is process-wide and cannot be switched off."""
    script = textwrap.dedent(f"""
        import json
        import keras
        import numpy as np
        from segmodel import train
        losses, weights = [], []
        for run in ("a", "b"):
            model_dir = {str(tmp_path)!r} + "/" + run
            history = train.main(["--train_data", {str(demo_dataset / "train-*.tfrecord")!r}, "--model_dir", model_dir,
                                  "--config", "tiny", "--epochs", "2", "--steps_per_epoch", "3",
                                  "--image_size", "64", "--deterministic", "true"])
            losses.append(history["loss"])
            weights.append(keras.models.load_model(model_dir + "/model.keras").get_weights())
        same = all(np.array_equal(x, y) for x, y in zip(*weights))
        print("RESULT " + json.dumps({{"losses": losses, "same_weights": bool(same)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SEGPIPE_VERBOSE": "0"}, cwd=Path(__file__).parent.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    first, second = result["losses"]
    assert len(first) == 2 and all(np.isfinite(first)) and first == second
    assert result["same_weights"]
