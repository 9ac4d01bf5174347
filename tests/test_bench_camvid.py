"""The CamVid bench: its published rows, and its training clock (the step budget re-made from
the run's own pace, on generated demo scenes with a clock that ticks by call: the same run on
any host)."""
import csv
import json
import math

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


@pytest.mark.slow  # trains (about half a minute)
def test_the_step_budget_is_planned_again_from_the_runs_own_pace(demo_dataset, tmp_path):
    """A first plan of 8 steps (a probe that guessed far too slow) for a budget of 60 clock
    seconds: after a tenth of it the plan is re-made from the pace between epoch ends, training
    resumes from the backup with it, runs to the new last step and the learning rate follows a
    schedule that ends there. No snapshot is taken at the stop for the re-plan."""
    config = TrainConfig(**{**PRESETS["tiny"], "steps_per_epoch": 2, "image_size": 64, "schedule": "poly"})
    data = {"train": str(demo_dataset / "train-*.tfrecord"), "val": str(demo_dataset / "val-*.tfrecord")}
    (tmp_path / "plan.json").write_text(json.dumps({"max_steps": 8, "epochs": 4, "budget_s": 60.0,
                                                    "probe_s_per_step": 20.0}))
    ticks = iter(range(10**6))  # one clock second a call: the pace depends on the code, not the host

    class LearningRates(keras.callbacks.Callback):
        seen = {}

        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            LearningRates.seen[step] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    budget = camvid.train_on_the_clock(str(tmp_path), data, config, [20.0, 60.0], timer=lambda: float(next(ticks)),
                                       callbacks=[LearningRates()])

    clock = json.loads((tmp_path / "clock.json").read_text())
    assert json.loads((tmp_path / "plan.json").read_text()) == budget
    again = budget["replanned"]
    assert again["first_max_steps"] == 8
    # the re-plan came at the first epoch end past 6 s (a tenth of 60), from the pace between the
    # first epoch's end and that one: steps done + 0.95 of the remaining seconds at that pace
    ends = clock["epoch_ends"]
    at = next(i for i, end in enumerate(ends) if end[1] >= 6.0)
    assert at >= 1 and again["at_step"] == ends[at][2] and again["elapsed_s"] == ends[at][1]
    pace = (ends[at][1] - ends[0][1]) / (ends[at][2] - ends[0][2])
    assert budget["max_steps"] == ends[at][2] + int(0.95 * (60.0 - ends[at][1]) / pace) > 8
    assert budget["epochs"] == math.ceil(budget["max_steps"] / 2)

    # trained on to the new last step, epochs numbered on across the resume
    rows = list(csv.DictReader((tmp_path / "model" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(budget["epochs"]))
    assert max(LearningRates.seen) == budget["max_steps"] - 1
    # poly decay (power 0.9) from the preset's rate: to 8 steps before the re-plan, to the new last step after
    for step, rate in LearningRates.seen.items():
        last = 8 if step < again["at_step"] else budget["max_steps"]
        expected = config.learning_rate * (1 - min(step, last) / last) ** 0.9
        assert rate == pytest.approx(expected, rel=1e-4, abs=1e-9), (step, last)

    # the snapshots: 20 s on the way; the last point is the trained model, not the model at the re-plan
    assert set(clock["snapshots"]) == {"at_0.333333min", "at_1min"}
    assert clock["snapshots"]["at_1min"]["step"] == budget["max_steps"]
    assert clock["snapshots"]["at_0.333333min"]["step"] < budget["max_steps"]
    assert (tmp_path / "model" / "model.keras").exists()
