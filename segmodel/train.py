"""Train an FCN on segmentation TFRecords.

    python -m segmodel.train --train_data 'OUT/train-*.tfrecord' [--val_data 'OUT/val-*.tfrecord'] \\
        --model_dir MODEL [--config tiny|paper] [--arch fcn8s|fcn16s|fcn32s] \\
        [--backbone_weights imagenet|none|PATH] [--image_size 512] [--batch_size 8] [--epochs 50] ...

One code path for the CPU, one GPU and several: ``tf.distribute.MirroredStrategy`` over the
visible GPUs (or the CPU), ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several
machines. MODEL/ gets: ``backup/`` (every epoch; a re-run resumes from it after a kill),
``best.keras`` (best validation mean IoU), ``logs/`` (TensorBoard), ``history.csv``,
``classes.json`` and the exported ``model.keras``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import sys

import keras
import tensorflow as tf

from segcli.train import config_from_args, make_parser
from segmodel import dataset, fcn
from segmodel.exported import register_custom_objects, save_atomic
from segmodel.losses import MaskedCrossEntropy, class_weights_from_stats
from segmodel.metrics import ConfusionMatrixMetric

LOG = logging.getLogger(__name__)


def cluster_config() -> dict:
    """TF_CONFIG, the cluster this process trains in and its place in it (empty on one machine)."""
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def make_strategy():
    if sum(len(v) for v in cluster_config().get("cluster", {}).values()) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def is_chief() -> bool:
    tf_config = cluster_config()
    task = tf_config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                    and "chief" not in tf_config.get("cluster", {}))


def multi_worker_workarounds(model, strategy) -> None:
    """Two of Keras 3's steps that fail under MultiWorkerMirroredStrategy (keras-team/keras#20585,
    open; seen with Keras 3.15 and TensorFlow 2.21), mended for this model:

    * before fit, Keras peeks at one distributed batch and reduces it across replicas with
      ``strategy.reduce`` to build the model symbolically, which the collective strategy cannot do
      eagerly ("Attempt to convert a value (PerReplica ...)"); the build needs only the batch's
      structure and shapes, so this replica's part is handed to it;
    * after each step, Keras averages the step's logs over the replicas with
      ``strategy.reduce("MEAN", v, axis=0)``, which fails on the scalar loss and metrics; scalars
      are averaged over the replicas (``axis=None``), anything else as Keras does.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer
    if not getattr(tf_trainer.reduce_per_replica, "segpipe_mended", False):
        keras_reduce = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
                return keras_reduce(values, strategy, reduction)

            def one(value):
                if isinstance(value, tf.distribute.DistributedValues) or tf.is_tensor(value):
                    if value.shape.rank == 0:
                        return strategy.reduce("MEAN", value, axis=None)
                return keras_reduce(value, strategy, reduction)
            return keras.tree.map_structure(one, values)

        reduce_per_replica.segpipe_mended = True
        tf_trainer.reduce_per_replica = reduce_per_replica
    keras_build = model._maybe_symbolic_build

    def local_part(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(local_part, next(batches))
                break
        return keras_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build


def shard_between_workers(ds, pattern: str, split: str, workers: int):
    """How tf.distribute splits ``ds`` between the workers of a multi-worker run, so that each
    example is read by one worker per pass: by shard file when there are at least as many files
    as workers (each reads only its files), else by example (each reads every file and keeps its
    share; a dataset of one shard has no files to hand out)."""
    if workers < 2 or ds is None:
        return ds
    files = len(dataset.list_shards(pattern, split))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.FILE
                                                         if files >= workers else
                                                         tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def task_index() -> int:
    return int(cluster_config().get("task", {}).get("index", 0))


def worker_count() -> int:
    """Machines in TF_CONFIG's cluster (chief and workers), 1 without one."""
    cluster = cluster_config().get("cluster", {})
    return max(1, sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")))


def set_precision(policy: str) -> str:
    if policy == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def build_model(config, num_classes: int):
    """The FCN a TrainConfig describes (untrained but for the backbone weights it names)."""
    return fcn.build_fcn(config.arch, num_classes, width=config.width, fc_units=config.fc_units,
                         dropout=config.dropout, batch_norm=config.batch_norm,
                         skip_scales=(0.01, 0.0001) if config.skip_scaling == "paper" else (1.0, 1.0),
                         backbone_weights=config.backbone_weights, normalization=config.normalization or None)


POLY_POWER = 0.9  # the poly schedule's exponent (DeepLab's): lr * (1 - step / steps) ** 0.9


def make_optimizer(config, total_steps: int, learning_rate=None):
    """The optimizer ``config`` names, its rate on ``config.schedule`` over ``total_steps``, or
    ``learning_rate`` (a keras LearningRateSchedule) instead: for a caller that steers the rate
    itself (bench/camvid.py's clock)."""
    lr = config.learning_rate
    if learning_rate is not None:
        lr = learning_rate
    elif config.schedule == "poly":
        lr = keras.optimizers.schedules.PolynomialDecay(lr, max(total_steps, 1), end_learning_rate=0.0, power=POLY_POWER)
    elif config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    elif config.schedule != "constant":
        raise ValueError(f"schedule must be poly, cosine or constant, got {config.schedule!r}")
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adam":
        return keras.optimizers.AdamW(lr, weight_decay=decay) if decay else keras.optimizers.Adam(lr)
    raise ValueError(f"optimizer must be sgd or adam, got {config.optimizer!r}")


def step_budget(max_steps: int):
    """A Keras callback that stops training once the optimizer has taken ``max_steps`` steps
    (counted across resumes, since the optimizer's iteration count is checkpointed)."""

    class StepBudget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= max_steps:
                self.model.stop_training = True

    return StepBudget()


def keep_best(path: str, metric: str, threshold):
    """A Keras callback saving the model to ``path`` whenever ``metric`` beats its best so far
    (starting from ``threshold``, the best logged before a resume), atomically (save_atomic)."""


    class KeepBest(keras.callbacks.Callback):
        best = threshold

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(metric)
            if value is not None and (self.best is None or value > self.best):
                KeepBest.best = value
                save_atomic(self.model, path)

    return KeepBest()


def _epoch_of(metadata: str):
    """The epoch a backup's training_metadata.json holds, or None when it is missing or cut short."""
    if not tf.io.gfile.exists(metadata):
        return None
    with tf.io.gfile.GFile(metadata) as handle:
        try:
            return int(json.loads(handle.read())["epoch"])
        except (ValueError, KeyError, TypeError):
            return None


def repair_backup(backup_dir: str) -> None:
    """Undoes a backup that a kill cut short while Keras's BackupAndRestore wrote it.

    Keras saves the weights, then writes ``training_metadata.json`` in place (not by rename); a
    kill in between leaves new weights beside an empty or partial metadata file, which Keras's
    restore cannot read (a JSONDecodeError, which its fallback to the previous backup does not
    catch). Then the previous backup (``.bkp``, kept by double_checkpoint) is put back as a pair,
    or, without one, the backup is removed and training starts again. Weights without any
    metadata are a first backup cut short (perhaps half a file, which Keras's fallback cannot
    mend as there is no previous backup): removed, and training starts again."""
    metadata = f"{backup_dir}/training_metadata.json"
    weights = f"{backup_dir}/latest.weights.h5"
    if not tf.io.gfile.exists(metadata):
        if tf.io.gfile.exists(weights):
            LOG.warning("%s: the first backup was cut short; training starts again", backup_dir)
            tf.io.gfile.remove(weights)
        return
    if _epoch_of(metadata) is not None:
        return
    if _epoch_of(f"{metadata}.bkp") is not None and tf.io.gfile.exists(f"{weights}.bkp"):
        LOG.warning("%s: the last backup was cut short; resuming from the one before it", backup_dir)
        tf.io.gfile.copy(f"{weights}.bkp", weights, overwrite=True)
        tf.io.gfile.copy(f"{metadata}.bkp", metadata, overwrite=True)
        return
    LOG.warning("%s: the only backup was cut short; training starts again", backup_dir)
    for path in (metadata, weights):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def resume_from_chief(chief_backup: str, own_backup: str) -> None:
    """A worker other than the chief resumes from the chief's backup, not its own: the workers
    of a run must start from the same epoch and weights (a worker killed while writing its own
    backup would otherwise start over, or from another epoch, than the rest). Its own backup is
    replaced by a copy of the chief's files (none when the chief has none: all start again).
    Called before the workers connect, so the chief has not yet begun to restore or save."""
    if tf.io.gfile.exists(own_backup):
        tf.io.gfile.rmtree(own_backup)
    tf.io.gfile.makedirs(own_backup)
    for name in tf.io.gfile.listdir(chief_backup) if tf.io.gfile.isdir(chief_backup) else ():
        tf.io.gfile.copy(f"{chief_backup}/{name}", f"{own_backup}/{name}", overwrite=True)


def trim_history(history_csv: str, backup_dir: str) -> None:
    """Drops the rows of history.csv for epochs the backup does not hold (logged, then killed
    before the backup was saved): the resumed run trains and logs them again, once."""
    if not tf.io.gfile.exists(history_csv):
        return
    # no backup yet (killed before the first one was saved): no epoch is kept
    done = _epoch_of(f"{backup_dir}/training_metadata.json") or 0
    with tf.io.gfile.GFile(history_csv) as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if int(row["epoch"]) < done]
    if len(kept) == len(rows) or not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    temp = f"{history_csv}.tmp"
    with tf.io.gfile.GFile(temp, "w") as handle:
        handle.write(out.getvalue())
    tf.io.gfile.rename(temp, history_csv, overwrite=True)


def best_logged(history_csv: str, metric: str):
    """The best (highest) value of ``metric`` in a CSVLogger file, or None."""

    if not tf.io.gfile.exists(history_csv):
        return None
    with tf.io.gfile.GFile(history_csv) as handle:
        values = [float(row[metric]) for row in csv.DictReader(handle) if row.get(metric) not in (None, "")]
    return max(values) if values else None


def train(train_data: str, model_dir: str, config, val_data: str = "", extra_callbacks=(), progress: int = 2,
          learning_rate=None) -> dict:
    """Trains ``config`` on ``train_data`` into ``model_dir`` (resuming from its backup), choosing
    on ``val_data`` when given; ``learning_rate``: a schedule in place of the config's
    (make_optimizer). Returns the history of this call's epochs."""


    register_custom_objects()  # best.keras is loaded back at the end
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        # process-wide and permanent (TensorFlow has no switch back)
        tf.config.experimental.enable_op_determinism()
    policy = set_precision(config.mixed_precision)
    classes = dataset.read_json_beside(train_data, "classes.json")
    if classes is None:
        raise FileNotFoundError(f"classes.json not found beside {train_data}")
    num_classes = len(classes["classes"])
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(f"{model_dir}/classes.json", "w") as handle:
        json.dump(classes, handle, indent=2)

    chief = is_chief()
    # A worker other than the chief writes its logs, history and backups (Keras would have them race
    # on the chief's files) to a folder of its own, named by its task index; removed when training
    # ends. It restores from a copy of the chief's backup, taken before the workers connect.
    scratch = model_dir if chief else f"{model_dir}/worker-{task_index()}-tmp"
    if not chief:
        resume_from_chief(f"{model_dir}/backup", f"{scratch}/backup")
    strategy = make_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size {config.batch_size} must be a multiple of the {replicas} replicas")
    examples = dataset.count_examples(train_data)
    steps_per_epoch = config.steps_per_epoch or max(1, examples // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    LOG.info("training %s on %d images, %d steps/epoch, %d steps, %d replicas, %s", config.arch, examples,
             steps_per_epoch, total_steps, replicas, policy)

    train_ds = dataset.training_dataset(train_data, config.batch_size, (config.image_size, config.image_size),
                                        config.min_scale, config.max_scale, config.jitter, seed=config.seed,
                                        deterministic=config.deterministic)
    # Repeated, with validation_steps: Keras keeps one iterator across epochs.
    val_ds = dataset.evaluation_dataset(val_data, "val").repeat() if val_data else None
    val_steps = dataset.count_examples(val_data, "val") if val_data else None
    workers = worker_count()
    train_ds = shard_between_workers(train_ds, train_data, "train", workers)
    if workers > 1 and val_ds is not None:
        # Validation runs at full image size, one image a batch (photos differ in size); Keras
        # would split each such batch between the workers, leaving some with none (a BatchNorm
        # shape error). The exported model is evaluated afterwards: segpipe evaluate.
        LOG.warning("%d workers: no validation during training (evaluate the exported model with segpipe "
                    "evaluate); model.keras is the last epoch's", workers)
        val_ds = val_steps = None
    weights = None
    if config.class_weights:
        weights = class_weights_from_stats(f"{dataset.dataset_dir(train_data)}/stats.json", num_classes,
                                           power=config.class_weight_power)
        LOG.info("class weights (power %g): %s", config.class_weight_power,
                 ", ".join(f"{name} {w:.3f}" for name, w in zip((c["name"] for c in classes["classes"]), weights)))
    with strategy.scope():
        model = build_model(config, num_classes)
        model.compile(optimizer=make_optimizer(config, total_steps, learning_rate), loss=MaskedCrossEntropy(class_weights=weights),
                      metrics=[ConfusionMatrixMetric(num_classes)])
    multi_worker_workarounds(model, strategy)

    # Per epoch, in this order: the history row, the best model, then the backup (the commit
    # point). A kill between them is undone on resume: trim_history drops the rows of epochs the
    # backup lacks, and every file is replaced by rename (save_atomic), never left half-written.
    repair_backup(f"{scratch}/backup")
    trim_history(f"{scratch}/history.csv", f"{scratch}/backup")
    for stale in tf.io.gfile.glob(f"{scratch}/*.tmp-*.keras"):  # a save cut short by a kill
        tf.io.gfile.remove(stale)
    callbacks = [
        keras.callbacks.TensorBoard(f"{scratch}/logs"),
        keras.callbacks.CSVLogger(f"{scratch}/history.csv", append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.max_steps:
        callbacks.append(step_budget(config.max_steps))
    best_path = f"{scratch}/best.keras"
    if val_ds is not None:
        # After a resume, the checkpoint must beat the best epoch before the kill (history.csv
        # holds it), not start again from minus infinity and overwrite best.keras with worse.
        callbacks.append(keep_best(best_path, "val_mean_iou", best_logged(f"{scratch}/history.csv", "val_mean_iou")
                                   if tf.io.gfile.exists(best_path) else None))
    # double_checkpoint: the previous epoch's backup is kept, and used if the latest one is damaged.
    callbacks.append(keras.callbacks.BackupAndRestore(f"{scratch}/backup", save_freq="epoch",
                                                      delete_checkpoint=False, double_checkpoint=True))
    callbacks.extend(extra_callbacks)  # after the backup, so they see a saved epoch
    history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch, validation_data=val_ds,
                        validation_steps=val_steps, callbacks=callbacks, verbose=progress)
    if chief:
        final = model
        if val_ds is not None and tf.io.gfile.exists(best_path):
            final = keras.models.load_model(best_path, compile=False)
        fcn.export_model(final, f"{model_dir}/model.keras", config.export_layout)
        with tf.io.gfile.GFile(f"{model_dir}/train_config.json", "w") as handle:
            json.dump(dataclasses.asdict(config), handle, indent=2)
        LOG.info("exported %s/model.keras", model_dir)
    else:  # a worker's logs, history and checkpoints are its own copies: the chief's are the run's
        tf.io.gfile.rmtree(scratch)
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = make_parser().parse_args(argv)
    history = train(args.train_data, args.model_dir, config_from_args(args), args.val_data, progress=args.progress)
    if history.get("val_mean_iou"):
        print(f"best validation mean IoU: {max(history['val_mean_iou']):.4f}")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
