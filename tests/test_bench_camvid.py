"""The CamVid bench: its published rows, the class offsets it fits on val, and its training
clock (the learning rate driven by the clock, on generated demo scenes with a clock that ticks
by step: the same run on any host)."""
import csv
import json

import keras
import numpy as np
import pytest

from bench import camvid
from segcli.train import PRESETS, TrainConfig



def test_the_published_per_class_figures_average_to_the_published_mean():
    """A digit mistyped in a transcribed row shows as a mean that is not the paper's (each class
    is tabulated to 0.001, the mean to 0.001: they agree within 0.0006)."""
    names = json.loads(open(camvid.os.path.join(camvid.ROOT, "examples", "camvid_classes.json")).read())["classes"]
    rows = [row for row in camvid.published_rows() if row["iou"]]
    assert len(rows) == 3
    for row in rows:
        assert sorted(row["iou"]) == sorted(names)
        assert sum(row["iou"].values()) / len(names) == pytest.approx(row["mean_iou"], abs=6e-4), row["model"]


def reference_mean_iou(labels, predicted, num_classes):
    """IoU class by class from the pixel sets, over the classes labelled or predicted."""
    ious = []
    for c in range(num_classes):
        truth, guess = labels == c, predicted == c
        union = np.logical_or(truth, guess).sum()
        if union:
            ious.append(np.logical_and(truth, guess).sum() / union)
    return float(np.mean(ious))


def test_class_offsets_fitted_on_scores_undo_a_class_held_back():
    """Scores that favour the true class, with class 1's held back by 1.0: the fitted offsets raise
    class 1 most, their mean IoU is the one they report (recomputed here from the pixel
    sets) and better than none, and no single offset of the grid improves on them."""
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=20000, p=[0.6, 0.1, 0.3])
    scores = (np.eye(3)[labels] * 1.5 + rng.normal(0, 1, (labels.size, 3))).astype(np.float32)
    scores[:, 1] -= 1.0
    offsets, mean_iou = camvid.fit_class_offsets(scores, labels, 3, sweeps=6)
    assert mean_iou == pytest.approx(reference_mean_iou(labels, np.argmax(scores + offsets, 1), 3), abs=1e-12)
    assert mean_iou > reference_mean_iou(labels, np.argmax(scores, 1), 3) + 0.01
    assert offsets[1] > max(offsets[0], offsets[2])
    for c in range(3):
        for value in camvid.OFFSET_GRID:
            trial = list(offsets)
            trial[c] = value
            assert reference_mean_iou(labels, np.argmax(scores + trial, 1), 3) <= mean_iou + 1e-12, (c, value)


class Interrupt(Exception):
    pass


@pytest.mark.slow  # trains (about half a minute)
def test_the_clock_drives_the_learning_rate_to_zero_at_the_budget_across_a_kill(demo_dataset, tmp_path):
    """A 30-second budget on a clock that advances one second a step: the rate before each step
    is the poly decay over the clock (transcribed here), training stops at the budget, a run
    killed after its third epoch resumes on the same curve, and the snapshots are the models at
    10 s and at the end."""
    config = TrainConfig(**{**PRESETS["tiny"], "steps_per_epoch": 2, "image_size": 64, "schedule": "poly"})
    data = {"train": str(demo_dataset / "train-*.tfrecord"), "val": str(demo_dataset / "val-*.tfrecord")}
    budget = camvid.plan(str(tmp_path), config, 30.0)
    assert budget == {"schedule": "clock", "budget_s": 30.0, "learning_rate": config.learning_rate}

    class Time:  # one second a step: the clock reads t = k as step k begins and k + 1 when it ends
        now = 0.0

    class Tick(keras.callbacks.Callback):  # runs after the clock's callbacks
        rates = {}

        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            Tick.rates[step] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            Time.now += 1.0

    class KillAfterThirdEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise Interrupt()

    with pytest.raises(Interrupt):
        camvid.train_on_the_clock(str(tmp_path), data, config, [10.0, 30.0], timer=lambda: Time.now,
                                  callbacks=[Tick(), KillAfterThirdEpoch()])
    assert not (tmp_path / "model" / "model.keras").exists()
    camvid.train_on_the_clock(str(tmp_path), data, config, [10.0, 30.0], timer=lambda: Time.now, callbacks=[Tick()])

    assert sorted(Tick.rates) == list(range(30))  # 6 steps before the kill, 24 after, then the clock stops
    for step, rate in Tick.rates.items():  # one clock second a step: t = step
        assert rate == pytest.approx(config.learning_rate * (1 - step / 30) ** 0.9, rel=1e-5), step
    clock = json.loads((tmp_path / "clock.json").read_text())
    assert {name: info["step"] for name, info in clock["snapshots"].items()} == {"at_0.166667min": 10,
                                                                                 "at_0.5min": 30}
    rows = list(csv.DictReader((tmp_path / "model" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(15))
    assert (tmp_path / "model" / "model.keras").exists()
