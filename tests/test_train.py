"""Training and evaluation end to end on generated demo scenes (tiny configuration, CPU)."""
import csv
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from segmodel import evaluate, train
from segcli.train import PRESETS, TrainConfig
from segmodel.exported import register_custom_objects
from tests.helpers import free_ports

register_custom_objects()  # keras.models.load_model below reads the FCN's custom layers

pytestmark = pytest.mark.slow  # trains, or uses the trained model (1-2 minutes)


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


def test_a_resumed_run_keeps_the_best_epoch_from_before_the_kill(demo_dataset, tmp_path):
    """Killed after epoch 2, resumed with weights scrambled before every later epoch (so every
    later epoch is worse): the exported model is still the pre-kill best, and the optimizer's
    step count (and with it the learning-rate schedule) continues where it stopped."""
    config = TrainConfig(**{**PRESETS["tiny"], "epochs": 4, "steps_per_epoch": 3, "image_size": 64})
    data, val = str(demo_dataset / "train-*.tfrecord"), str(demo_dataset / "val-*.tfrecord")

    class KillAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt()

    class Scramble(keras.callbacks.Callback):
        steps_at_start = None

        def on_train_begin(self, logs=None):
            Scramble.steps_at_start = int(self.model.optimizer.iterations.numpy())

        def on_epoch_begin(self, epoch, logs=None):
            # Each weight tensor's values shuffled: the same (finite) ranges, the learned function gone.
            rng = np.random.default_rng(epoch)
            self.model.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in self.model.get_weights()])

    with pytest.raises(Interrupt):
        train.train(data, str(tmp_path), config, val_data=val, extra_callbacks=[KillAfterEpoch()], progress=0)
    before = [float(r["val_mean_iou"]) for r in csv.DictReader((tmp_path / "history.csv").open())]
    train.train(data, str(tmp_path), config, val_data=val, extra_callbacks=[Scramble()], progress=0)
    after = [float(r["val_mean_iou"]) for r in csv.DictReader((tmp_path / "history.csv").open())][len(before):]
    assert len(before) == 2 and len(after) == 2 and max(after) < max(before) and np.isfinite(after).all()
    assert Scramble.steps_at_start == 2 * config.steps_per_epoch
    model = keras.models.load_model(tmp_path / "model.keras")
    assert evaluate.evaluate(model, val)["mean_iou"] == pytest.approx(max(before), abs=2e-3)


def test_max_steps_budget_counts_optimizer_steps_across_a_resume(demo_dataset, tmp_path):
    config = TrainConfig(**{**PRESETS["tiny"], "epochs": 3, "steps_per_epoch": 4, "max_steps": 6,
                            "image_size": 64})
    data = str(demo_dataset / "train-*.tfrecord")

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Interrupt()

    class Steps(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            Steps.final = int(self.model.optimizer.iterations.numpy())

    with pytest.raises(Interrupt):
        train.train(data, str(tmp_path), config, extra_callbacks=[KillAfterFirstEpoch()], progress=0)
    history = train.train(data, str(tmp_path), config, extra_callbacks=[Steps()], progress=0)
    assert Steps.final == 6  # 4 before the kill, 2 after: the budget spans the resume
    assert len(history["loss"]) == 1


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
            history = train.main(["--progress", "0", "--train_data", {str(demo_dataset / "train-*.tfrecord")!r}, "--model_dir", model_dir,
                                  "--config", "tiny", "--epochs", "2", "--steps_per_epoch", "3",
                                  "--image_size", "64", "--deterministic", "true"])
            losses.append(history["loss"])
            weights.append(keras.models.load_model(model_dir + "/model.keras").get_weights())
        same = all(np.array_equal(x, y) for x, y in zip(*weights))
        print("RESULT " + json.dumps({{"losses": losses, "same_weights": bool(same)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parent.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    first, second = result["losses"]
    assert len(first) == 2 and all(np.isfinite(first)) and first == second
    assert result["same_weights"]


def test_history_rows_of_epochs_the_backup_lacks_are_dropped_on_resume(tmp_path):
    """A kill after an epoch's row was logged but before its backup was saved: the resumed run
    trains that epoch again, so its old row goes (else history.csv would hold it twice)."""
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_mean_iou\n0,1.0,0.1\n1,0.8,0.2\n2,0.7,0.25\n")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup/training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    train.trim_history(str(history), str(tmp_path / "backup"))
    assert history.read_text() == "epoch,loss,val_mean_iou\n0,1.0,0.1\n1,0.8,0.2\n"
    train.trim_history(str(history), str(tmp_path / "backup"))  # nothing more to drop
    assert [r["epoch"] for r in csv.DictReader(history.open())] == ["0", "1"]


def test_history_without_a_backup_keeps_no_epoch(tmp_path):
    """Killed after the first epoch's row was logged, before any backup was saved."""
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n")
    train.trim_history(str(history), str(tmp_path / "backup"))
    assert history.read_text() == "epoch,loss\n"


def test_a_first_backup_cut_short_while_keras_wrote_its_weights_is_removed(tmp_path):
    """Keras writes the weights before any metadata: a kill during the first backup leaves half
    an HDF5 file and nothing else, which Keras's restore cannot open (an OSError, with no
    previous backup to fall back on). The next run starts again instead."""
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # a cut-short HDF5 file
    train.repair_backup(str(backup))
    assert list(backup.iterdir()) == []
    # a whole backup is left alone
    (backup / "latest.weights.h5").write_bytes(b"weights")
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    train.repair_backup(str(backup))
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "training_metadata.json"]


def test_a_worker_resumes_from_the_chiefs_backup_not_its_own(tmp_path):
    """A worker's own backup may hold another epoch than the chief's (it was killed while writing
    it): it is replaced by the chief's files, or removed when the chief has none."""
    chief, own = tmp_path / "model/backup", tmp_path / "model/worker-1-tmp/backup"
    chief.mkdir(parents=True)
    own.mkdir(parents=True)
    (own / "latest.weights.h5").write_bytes(b"half")  # killed in its first backup
    (chief / "latest.weights.h5").write_bytes(b"epoch 2")
    (chief / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (chief / "latest.weights.h5.bkp").write_bytes(b"epoch 1")
    (chief / "training_metadata.json.bkp").write_text('{"epoch": 1, "batch": 0}')
    train.resume_from_chief(str(chief), str(own))
    assert {p.name: p.read_bytes() for p in own.iterdir()} == {p.name: p.read_bytes() for p in chief.iterdir()}
    for p in chief.iterdir():
        p.unlink()
    train.resume_from_chief(str(chief), str(own))
    assert list(own.iterdir()) == []


@pytest.mark.parametrize("previous", [True, False])
def test_a_backup_cut_short_while_keras_wrote_its_metadata_is_undone_and_training_resumes(
        demo_dataset, tmp_path, previous):
    """Keras's BackupAndRestore saves the weights, then writes training_metadata.json in place: a
    kill in between leaves it empty, and Keras's own restore stops with a JSONDecodeError. The
    next run puts the previous backup back (double_checkpoint) or, without one, starts again;
    either way it finishes with every epoch in history.csv once."""
    config = TrainConfig(**{**PRESETS["tiny"], "epochs": 3, "steps_per_epoch": 2, "image_size": 64})

    class KillAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == (1 if previous else 0):
                raise Interrupt()

    data = str(demo_dataset / "train-*.tfrecord")
    with pytest.raises(Interrupt):
        train.train(data, str(tmp_path), config, extra_callbacks=[KillAfterEpoch()])
    backup = tmp_path / "backup"
    assert (backup / "latest.weights.h5.bkp").exists() == previous
    (backup / "training_metadata.json").write_text("")  # the kill's moment: weights new, metadata empty
    history = train.train(data, str(tmp_path), config)
    assert len(history["loss"]) == (2 if previous else 3)  # resumed after epoch 1, or from the start
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 3


def test_segpipe_train_exports_the_layout_its_flag_names(demo_dataset, tmp_path, caplog):
    """--export_layout nchw through the training command: the exported model takes torchvision's
    [N, 3, H, W] input (0..1, ImageNet mean and std) and returns {"out": [N, C, H, W]}. And
    --class_weights with --class_weight_power 1 weighs the loss by plain median frequency / frequency
    of the dataset's stats.json."""
    caplog.set_level(logging.INFO, logger="segmodel.train")
    train.main(["--progress", "0", "--train_data", str(demo_dataset / "train-*.tfrecord"), "--model_dir",
                str(tmp_path), "--config", "tiny", "--epochs", "1", "--steps_per_epoch", "1", "--image_size", "64",
                "--export_layout", "nchw", "--class_weights", "true", "--class_weight_power", "1"])
    assert json.loads((tmp_path / "train_config.json").read_text())["export_layout"] == "nchw"
    names = [c["name"] for c in json.loads((demo_dataset / "classes.json").read_text())["classes"]]
    pixels = json.loads((demo_dataset / "stats.json").read_text())["pixels_per_class"]
    freq = np.array([pixels[n] for n in names], float) / sum(pixels[n] for n in names)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("class weights")]
    logged = dict(item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", "))
    assert np.allclose([float(logged[n]) for n in names], np.median(freq) / freq, atol=1e-3)
    model = keras.models.load_model(tmp_path / "model.keras")
    scores = model(np.zeros((2, 3, 40, 56), np.float32))
    assert set(scores) == {"out"} and tuple(scores["out"].shape) == (2, 4, 40, 56)


def _worker_command(demo_dataset, model_dir, epochs):
    return [sys.executable, "-m", "segcli.main", "train", "--train_data", str(demo_dataset / "train-*.tfrecord"),
            "--val_data", str(demo_dataset / "val-*.tfrecord"), "--model_dir", str(model_dir), "--config", "tiny",
            "--epochs", str(epochs), "--image_size", "64", "--batch_size", "8", "--progress", "0"]


def _start_workers(demo_dataset, model_dir, epochs, ports, logs):
    import os
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(len(ports)):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(_worker_command(demo_dataset, model_dir, epochs), env=env,
                                          cwd=Path(__file__).resolve().parents[1],
                                          stdout=open(logs / f"worker{index}.log", "a"), stderr=subprocess.STDOUT))
    return processes


@pytest.mark.slow
def test_two_workers_train_together_and_resume_after_one_is_killed(demo_dataset, tmp_path):
    """The documented multi-machine path on one machine: two `segpipe train` processes with a
    TF_CONFIG naming two workers on 127.0.0.1 (MultiWorkerMirroredStrategy). Both exit 0; the
    model folder holds one copy of each file, the chief's (worker 0's); the other worker's own
    copies are gone. A worker killed mid-run: both commands again resume from the last backup and
    every epoch is in history.csv once."""
    import signal
    import time
    model_dir = tmp_path / "model"
    ports = free_ports(2)
    workers = _start_workers(demo_dataset, model_dir, 4, ports, tmp_path)
    backup = model_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 600
    while time.time() < deadline and not (backup.exists() and backup.read_text().strip()
                                          and json.loads(backup.read_text())["epoch"] >= 1):
        assert all(w.poll() is None for w in workers), (tmp_path / "worker0.log").read_text()[-3000:]
        time.sleep(0.5)
    workers[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-run; worker 0 cannot go on without it
    workers[1].wait()
    try:
        workers[0].wait(120)
    except subprocess.TimeoutExpired:
        workers[0].kill()
        workers[0].wait()
    assert not (model_dir / "model.keras").exists()

    workers = _start_workers(demo_dataset, model_dir, 4, free_ports(2), tmp_path)
    codes = [w.wait(600) for w in workers]
    assert codes == [0, 0], [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    log = (tmp_path / "worker0.log").read_text()
    assert "replicas" in log and "2 workers" in log  # the run was a two-worker one
    with open(model_dir / "history.csv") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2, 3]
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "backup", "classes.json", "history.csv", "logs", "model.keras", "train_config.json"]
    register_custom_objects()
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    assert model.output_shape[-1] == 4


SHARD_PROBE = """
import json, os, sys
import tensorflow as tf
from segmodel import dataset, features, train
strategy = tf.distribute.MultiWorkerMirroredStrategy()
pattern, out = sys.argv[1], sys.argv[2]
names = dataset._records(pattern, shuffle=True, seed=0).map(
    lambda r: tf.io.parse_single_example(r, features.feature_spec())[features.IMAGE_SOURCE_ID])
ds = train.shard_between_workers(names.batch(4, drop_remainder=False), pattern, "train", train.worker_count())
seen = []
for batch in strategy.experimental_distribute_dataset(ds):
    for part in strategy.experimental_local_results(batch):
        seen += [n.decode() for n in part.numpy().tolist()]
json.dump(seen, open(out, "w"))
"""


def _scene_records(tmp_path, shards: int) -> str:
    """24 demo scenes as training records in ``shards`` files (no val split): their pattern."""
    from pipelines import coco_to_tfrecord
    from pipelines.demo_world import scenes
    annotations = scenes.write_coco_dataset(str(tmp_path / "coco"), 24, seed=5)
    coco_to_tfrecord.run(["--annotations", annotations, "--images", str(tmp_path / "coco/images"), "--output_dir",
                          str(tmp_path / "data"), "--val_fraction", "0", "--num_shards", str(shards)])
    return str(tmp_path / "data" / "train-*.tfrecord")


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 4])
def test_two_workers_read_disjoint_examples_that_cover_the_data(tmp_path, shards):
    """The sharding a two-worker run uses (train.shard_between_workers, then tf.distribute): one
    pass over the training records, each worker's examples recorded: disjoint, and together
    every record once; by file with 4 shards, by example with 1."""
    import os

    pattern = _scene_records(tmp_path, shards)
    assert len(list((tmp_path / "data").glob("train-*.tfrecord"))) == shards
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = [subprocess.Popen([sys.executable, "-c", SHARD_PROBE, pattern, str(tmp_path / f"seen{i}.json")],
                                cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE,
                                env=dict(os.environ, TF_CONFIG=json.dumps(
                                    {"cluster": cluster, "task": {"type": "worker", "index": i}})))
               for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-3000:]
    seen = [json.loads((tmp_path / f"seen{i}.json").read_text()) for i in range(2)]
    from tests.helpers import read_records
    everything = sorted(read_records(pattern))  # {source id: record}, read by plain TF
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == everything


EQUAL_RUN = ["--config", "tiny", "--batch_norm", "false", "--dropout", "0", "--deterministic", "true", "--seed", "7",
             "--optimizer", "sgd", "--learning_rate", "0.01", "--min_scale", "1", "--max_scale", "1",
             "--image_size", "64", "--batch_size", "8", "--epochs", "2", "--steps_per_epoch", "3", "--progress", "0"]


@pytest.mark.slow
def test_two_workers_train_the_same_model_as_one_process_with_the_same_global_batch(tmp_path):
    """Two workers with a global batch of 8 (4 each) against one process with batch 8, on one
    shard (each global batch then holds the same 8 examples in both runs: tf.distribute splits
    it between the workers) with --deterministic: the same weights up to float rounding (the
    mean over 8 examples against the mean of two means over 4). Without BatchNorm and dropout:
    with them a worker's statistics and masks come from its own 4 examples (documented in
    docs/training.md)."""
    import os

    data = _scene_records(tmp_path, 1)
    root = Path(__file__).resolve().parents[1]

    def command(model_dir, batch="8"):
        argv = [batch if a == "8" else a for a in EQUAL_RUN]
        return [sys.executable, "-m", "segcli.main", "train", "--train_data", data, "--model_dir", str(model_dir),
                *argv]

    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    runs = [subprocess.Popen(command(tmp_path / "alone"), cwd=root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE),
            subprocess.Popen(command(tmp_path / "batch4", "4"), cwd=root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)]
    for index in range(2):
        runs.append(subprocess.Popen(command(tmp_path / "two"), cwd=root, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=dict(env, TF_CONFIG=json.dumps(
                                         {"cluster": cluster, "task": {"type": "worker", "index": index}}))))
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()[-3000:]
    assert "2 replicas" in err.decode() or "2 workers" in err.decode()
    load = lambda name: keras.models.load_model(tmp_path / name / "model.keras", compile=False).get_weights()
    alone, two, other = load("alone"), load("two"), load("batch4")
    differ = max(float(np.abs(a - b).max()) for a, b in zip(alone, two))
    apart = max(float(np.abs(a - b).max()) for a, b in zip(alone, other))
    print(f"largest weight difference from one process: two workers {differ:.2e}, batches of 4 {apart:.2e}")
    # The same start, other batches (4 examples a step): what a difference in the data a step
    # sees looks like, against float rounding.
    assert apart > 1e-3, apart
    assert differ < 1e-4, differ  # measured: 8e-6
