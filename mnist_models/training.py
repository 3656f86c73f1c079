"""Train the study's runs and write their folders: model, history, gradients, histograms, manifest.

A run is fully described by a `RunSpec` (mnist_models.records). Runs whose specs differ only in
their epoch count form a lineage: they are trained once, the shorter ones written on the way, and a
longer run continues from the furthest saved state (a finished run or a per-epoch checkpoint).
"""

from __future__ import annotations

import functools
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_models import data as data_lib
from mnist_models.atomic_files import atomic_directory, temporary_directory, write_json
from mnist_models.feeding import Feeder
from mnist_models.hparams import write_hparams
from mnist_models.layout import RunFolder
from mnist_models.memory import peak_memory_mb
from mnist_models.records import RunSpec, TrainedRun
from mnist_models.runs import Start, checkpoints_of, find_start, folder_hashes, read_manifest, trained_run

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
HISTOGRAM_BINS = 40
# Each epoch's gradient norms are the mean, over the batches of a fixed probe of 2,048 training images in
# training-size batches, of each kernel's gradient norm: what the optimizer's steps see, not one batch's
# handful of misclassified images (benchmarks/results/gradient_measure.md: the noise of both measures).
GRADIENT_PROBE = 2048
# Validation's batch size changes no trained weight, only the cost of scoring. It is prediction.PREDICT_BATCH (a
# test holds them equal): the last epoch's validation pass is kept as the run's test predictions, equal to a later
# prediction's to the last bit. Not imported from there: the prediction table's code is not training's.
VALIDATION_BATCH = 1000
# Training steps per call into TensorFlow: the same steps, fewer round trips from Python (measured in
# benchmarks/results/training_levers.md: dnn 0.47x, convnet 0.81x, resnet 0.90x per epoch).
STEPS_PER_EXECUTION = 16
# Called with a finished run's folder (before it is published), the model, the test split, the log and the test
# split's probabilities from the last epoch's validation pass (None when no epoch was trained in this process).
AfterRun = Callable[[RunFolder, object, data_lib.Split, Callable[[str], None], np.ndarray | None], None]


def configure_threads(threads: int | None) -> None:
    """Set TensorFlow's thread pools; a process whose TensorFlow already runs on another count is refused (the
    count is part of a run's key: its numbers depend on it)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        running = tf.config.threading.get_intra_op_parallelism_threads()
        if running not in (0, threads):  # 0: set by no one (a test's process); a worker process sets it first
            raise ValueError(f"this process's TensorFlow already runs on {running} thread(s); the run was planned "
                             f"for {threads}: train it in a fresh process") from None


def _seed_initial_weights(model, seed: int) -> None:
    """Re-draw every seeded initializer from `seed` alone.

    Keras draws a default initializer seed from Python's global `random` module, which other
    threads of a worker process (Prefect's, Dask's) may also draw from; re-initializing from a
    private generator makes the starting weights depend on the run's seed and nothing else.
    """
    generator = random.Random(seed)
    for layer in model.layers:
        for initializer_name, variable_name in (("kernel_initializer", "kernel"), ("bias_initializer", "bias")):
            initializer = getattr(layer, initializer_name, None)
            variable = getattr(layer, variable_name, None)
            if initializer is None or variable is None:
                continue
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = generator.randint(1, 10**9)
            variable.assign(type(initializer).from_config(config)(variable.shape, variable.dtype))


def _first_kernel_layer(model):
    try:
        return model.get_layer("target_layer")
    except ValueError:
        return next(layer for layer in model.layers if hasattr(layer, "kernel"))


class _Recorder:
    """Per epoch: the tracked kernel's histogram, and each kernel's gradient norm over a fixed probe: the mean
    and the standard deviation of its norm over the probe's training-size batches."""

    def __init__(self, model, probe: tuple[np.ndarray, np.ndarray], batch_size: int) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.kernel_layer = _first_kernel_layer(model)
        self.kernel_layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
        loss_function = keras.losses.SparseCategoricalCrossentropy()
        kernels = [layer.kernel for layer in self.kernel_layers]
        batches = max(1, len(probe[1]) // batch_size)  # whole batches only: each norm is of one training step's size
        size = min(batch_size, len(probe[1]))
        self.images = tf.constant(probe[0][: batches * size].reshape(batches, size, *probe[0].shape[1:]))
        self.labels = tf.constant(probe[1][: batches * size].reshape(batches, size))

        # All batches in one call into TensorFlow, one after the other: (batches, kernels), the same norms to the
        # last bit as one call per batch, which spent more on the calls than on the arithmetic for the dnn (one
        # thread, 1,984 images: dnn 0.058 -> 0.010 s a probe, convnet 1.20 -> 1.02 s, resnet 3.71 -> 3.56 s).
        @tf.function
        def norms(images, labels):
            def batch_norms(index):
                with tf.GradientTape() as tape:
                    loss = loss_function(labels[index], model(images[index], training=False))
                return tf.stack([tf.norm(gradient) for gradient in tape.gradient(loss, kernels)])

            return tf.map_fn(batch_norms, tf.range(tf.shape(images)[0]), fn_output_signature=tf.float32,
                             parallel_iterations=1)

        self._norms = norms

    def histogram(self, epoch: int) -> list[dict]:
        counts, edges = np.histogram(np.asarray(self.kernel_layer.kernel).ravel(), bins=HISTOGRAM_BINS)
        return [{"epoch": epoch, "layer": self.kernel_layer.name, "bin_left": float(left), "bin_right": float(right),
                 "count": int(count)} for left, right, count in zip(edges[:-1], edges[1:], counts)]

    def gradients(self, epoch: int) -> list[dict]:
        per_batch = self._norms(self.images, self.labels).numpy()
        means, spreads = per_batch.mean(axis=0), per_batch.std(axis=0, ddof=1) if len(per_batch) > 1 else 0 * per_batch[0]
        return [{"epoch": epoch, "layer": layer.name, "gradient_norm": float(mean), "gradient_norm_sd": float(spread),
                 "probe_batches": len(per_batch)}
                for layer, mean, spread in zip(self.kernel_layers, means, spreads)]


@dataclass
class _State:
    """A lineage's training state after `epoch` epochs: its per-epoch records (the model lives in Keras)."""

    epoch: int
    history: list[dict]
    gradients: list[dict]
    histograms: list[dict]
    diverged: dict | None = None  # the epoch whose loss was not finite, and the last finite epoch's metrics
    predictions: np.ndarray | None = None  # the test split's probabilities after `epoch`, from its validation pass

    def save(self, model, folder: RunFolder) -> None:
        """Write the model (weights and optimizer state) and the records into `folder`."""
        model.save(folder.model)
        pd.DataFrame(self.history, columns=HISTORY_COLUMNS).to_parquet(folder.history, index=False)
        pd.DataFrame(self.gradients).to_parquet(folder.gradients, index=False)
        pd.DataFrame(self.histograms).to_parquet(folder.kernel_histograms, index=False)

    @classmethod
    def load(cls, folder: RunFolder, epoch: int) -> "_State":
        """Records of a saved state, cut at `epoch`."""
        def upto(path: Path) -> list[dict]:
            frame = pd.read_parquet(path)
            return frame[frame["epoch"] <= epoch].to_dict(orient="records")
        return cls(epoch, upto(folder.history), upto(folder.gradients), upto(folder.kernel_histograms))


def train_run(spec: RunSpec, train_path: str | os.PathLike[str], test_path: str | os.PathLike[str],
              folder: RunFolder, *, log: Callable[[str], None] = print) -> TrainedRun:
    """Train `spec` (continuing the furthest saved state of its lineage) and write its run folder."""
    (trained,) = train_lineage([spec], train_path, test_path, {spec.run_id: folder}, log=log)
    return trained


def train_lineage(specs: list[RunSpec], train_path: str | os.PathLike[str], test_path: str | os.PathLike[str],
                  folders: dict[str, RunFolder], *, resume: bool = True,
                  after_run: AfterRun | None = None, log: Callable[[str], None] = print) -> list[TrainedRun]:
    """Train one lineage (specs equal but for their epochs) once, writing each spec's run folder at its epoch.

    Training resumes from the furthest finished run or checkpoint of the lineage, so a longer run
    continues a shorter one and a killed run resumes at its last epoch. Each epoch's data order is a
    function of (seed, epoch) alone, which makes continuing the same as training straight through.
    `after_run(folder, model, test, log, probabilities)` is called for each run before its folder is published,
    with the model in memory and its last validation pass's probabilities (the flow keeps the test-split
    predictions this way: prediction.KeepPredictions).
    """
    specs = sorted(specs, key=lambda spec: spec.epochs)
    if len({spec.lineage for spec in specs}) != 1:
        raise ValueError(f"runs {[spec.run_id for spec in specs]} are not one lineage; expected specs equal but "
                         "for their epochs")
    runs_dir = next(iter(folders.values())).path.parent
    checkpoints = checkpoints_of(runs_dir, specs[0])
    if not resume:  # trained afresh: no earlier state of the lineage may be continued later
        shutil.rmtree(checkpoints, ignore_errors=True)
    finished = {spec.run_id: manifest for spec in specs if resume
                and (manifest := read_manifest(folders[spec.run_id])) is not None}
    pending = [spec for spec in specs if spec.run_id not in finished]
    written = {run.spec.run_id: run for run in _train_pending(
        pending, train_path, test_path, folders, runs_dir, checkpoints, resume, after_run, log)} \
        if pending else {}
    return [written.get(spec.run_id) or trained_run(spec, finished[spec.run_id]) for spec in specs]


def _train_pending(specs: list[RunSpec], train_path, test_path, folders: dict[str, RunFolder], runs_dir: Path,
                   checkpoints: Path, resume: bool, after_run: AfterRun | None,
                   log: Callable[[str], None]) -> list[TrainedRun]:
    """Train a lineage's unfinished runs (in epoch order) from its furthest usable saved state."""
    configure_threads(specs[0].threads)
    import keras
    import tensorflow as tf

    from mnist_models.validation import Validator

    spec = specs[0]
    keras.backend.clear_session()  # a worker process trains lineage after lineage: start each from a clean state
    keras.utils.set_random_seed(spec.seed)
    tf.config.experimental.enable_op_determinism()
    train = data_lib.stratified_subset(_loaded_split(train_path), spec.train_subset, spec.seed)
    test = _loaded_split(test_path)
    probe_rows = np.random.default_rng(spec.seed).choice(len(train), min(GRADIENT_PROBE, len(train)), replace=False)
    # Any saved state up to the first run still to write: a finished shorter run or a checkpoint.
    start = find_start(spec, runs_dir, specs[0].epochs, frozenset(run.run_id for run in specs)) if resume else None
    checkpoints.mkdir(parents=True, exist_ok=True)
    # Named like io's temporaries, so that a killed run's live folder is recognised and removed later.
    live = RunFolder(temporary_directory(checkpoints / "live"))
    try:
        model, state = _begin(spec, start, live, probe_rows, train, log)
        recorder = _Recorder(model, (train.images[probe_rows], train.labels[probe_rows]), spec.batch_size)
        feed = Feeder(train.images, train.labels)
        validation = Validator(model, Feeder(test.images, test.labels).batches(VALIDATION_BATCH))
        if start is None:
            state.gradients, state.histograms = recorder.gradients(0), recorder.histogram(0)
        else:  # a resumed lineage may already be at a run's epochs: that run's folder is written from `live`
            state.save(model, live)
        trained, began, started_unix = [], time.perf_counter(), time.time()
        for target in specs:
            while state.epoch < target.epochs and state.diverged is None:
                _train_epoch(model, recorder, state, target, specs[-1].epochs, feed, validation, live, log)
                state.save(model, live)
                if (state.diverged is None and state.epoch < specs[-1].epochs
                        and state.epoch not in {other.epochs for other in specs}):
                    _checkpoint(live, state.epoch, checkpoints)
            trained.append(_materialize(target, model, state, live, folders[target.run_id], start, len(train),
                                        test, spec.threads, time.perf_counter() - began, started_unix,
                                        after_run, log))
    finally:
        shutil.rmtree(live.path, ignore_errors=True)
    _prune_checkpoints(checkpoints, keep_after=specs[-1].epochs)  # done: its run folders are the saved states
    return trained


def _loaded_split(path: str | os.PathLike[str]) -> data_lib.Split:
    """The split at `path`, read once per process for each version of the file: a worker trains lineage after
    lineage on the same splits (reading the 60,000 training images took about 1 s of each lineage's setup)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return data_lib.load_split(path)  # which says what is missing and what to run
    return _read_split(str(path), status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=2)  # the training and the test split
def _read_split(path: str, *version: int) -> data_lib.Split:
    split = data_lib.load_split(path)
    for array in (split.images, split.labels, split.source_index):
        array.flags.writeable = False  # shared by the process's lineages: no one may change it
    return split


def _begin(spec: RunSpec, start: Start | None, live: RunFolder, probe_rows, train, log):
    """The model and records to continue from: a saved state, or a freshly built, seeded and compiled model."""
    import keras

    from mnist_models.architectures import build_model

    if start is not None:
        log(f"{spec.run_id}: continuing from epoch {start.epoch} of {start.source}")
        # Keras's per-epoch logs (train/, validation/) continue; the earlier run's HParams record does not.
        shutil.copytree(start.folder.tensorboard, live.tensorboard, dirs_exist_ok=True,
                        ignore=lambda folder, names: [name for name in names if Path(folder, name).is_file()]
                        if Path(folder) == start.folder.tensorboard else [])
        state = _State.load(start.folder, start.epoch)
        if start.source != "checkpoint":  # a diverged run stays diverged: its weights are not numbers
            state.diverged = (read_manifest(start.folder) or {}).get("diverged")
        return keras.saving.load_model(start.folder.model), state
    model = build_model(spec.model)
    _seed_initial_weights(model, spec.seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
                  steps_per_execution=STEPS_PER_EXECUTION)
    return model, _State(0, [], [], [])


def _train_epoch(model, recorder: _Recorder, state: _State, spec: RunSpec, last_epoch: int, feed: Feeder,
                 validation, live: RunFolder, log: Callable[[str], None]) -> None:
    """One epoch in the lineage's fixed data order, its validation pass (whose probabilities the state keeps),
    then its records and one progress line."""
    import keras

    from mnist_models.validation import ValidationCallback

    order = np.random.default_rng([spec.seed, state.epoch]).permutation(feed.rows)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(live.tensorboard), histogram_freq=1)
    validating = ValidationCallback(validation, tensorboard)  # before TensorBoard: it writes what this adds
    began = time.perf_counter()
    fit = model.fit(feed.batches(spec.batch_size, order), epochs=state.epoch + 1, initial_epoch=state.epoch,
                    shuffle=False, callbacks=[validating, tensorboard], verbose=0)
    seconds = time.perf_counter() - began
    state.epoch, state.predictions = state.epoch + 1, validating.probabilities
    row = {"epoch": state.epoch, **{key: float(fit.history[key][-1]) for key in HISTORY_COLUMNS[1:5]},
           "seconds": seconds}
    state.history.append(row)
    log(f"{spec.run_id}: epoch {state.epoch}/{last_epoch} loss {row['loss']:.4f} accuracy {row['accuracy']:.4f} "
        f"val_accuracy {row['val_accuracy']:.4f} ({seconds:.1f} s)")
    if not np.isfinite([row["loss"], row["val_loss"]]).all():  # the weights are no longer numbers: stop here
        last = state.history[-2] if len(state.history) > 1 else None
        state.diverged = {"epoch": state.epoch,
                          "last_finite": None if last is None else {key: last[key] for key in HISTORY_COLUMNS[:5]}}
        log(f"{spec.run_id}: DIVERGED at epoch {state.epoch} (loss {row['loss']}); training stopped, the run is "
            f"kept as diverged and scored at chance level")
        return
    state.gradients += recorder.gradients(state.epoch)
    state.histograms += recorder.histogram(state.epoch)


def _checkpoint(live: RunFolder, epoch: int, checkpoints: Path) -> None:
    """Keep the state after `epoch` (atomically), and only the latest: what a resumed run can use."""
    with atomic_directory(checkpoints / f"epoch-{epoch:04d}") as work:
        shutil.copytree(live.path, work, dirs_exist_ok=True)
        write_json(work / "state.json", {"epoch": epoch})
    _prune_checkpoints(checkpoints, keep_after=epoch - 1, keep_latest=True)


def _prune_checkpoints(checkpoints: Path, keep_after: int, keep_latest: bool = False) -> None:
    """Remove checkpoints at or before `keep_after` (all of them when the lineage is done), the latest aside."""
    saved = sorted(checkpoints.glob("epoch-*"))
    for folder in saved[:-1] if keep_latest else saved:
        if int(folder.name.split("-")[1].split(".")[0]) <= keep_after:
            shutil.rmtree(folder, ignore_errors=True)
    if not keep_latest and checkpoints.exists() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()


def _materialize(spec: RunSpec, model, state: _State, live: RunFolder, folder: RunFolder, start: Start | None,
                 train_images: int, test: data_lib.Split, threads: int | None, wall_seconds: float,
                 started_unix: float, after_run: AfterRun | None, log: Callable[[str], None]) -> TrainedRun:
    """Write `spec`'s complete run folder from the live state (atomically, the manifest last)."""
    import keras
    import tensorflow as tf

    from mnist_models.architectures import describe_layers

    with atomic_directory(folder.path) as work_dir:
        shutil.copytree(live.path, work_dir, dirs_exist_ok=True)
        work = folder.within(work_dir)
        final = state.history[-1]
        manifest = {
            "run_id": folder.run_id,
            "cache_key": spec.cache_key,
            "lineage": spec.lineage,
            "continued_from": None if start is None else {"epoch": start.epoch, "source": start.source},
            "parameters": spec.model_dump(mode="json"),
            "seed": spec.seed,
            "data_hash": spec.data_hash,
            "code_hash": spec.code_hash,
            "code_files": dict(spec.code_files),
            "train_images": train_images,
            "test_images": len(test),
            "trainable_parameters": int(model.count_params()),
            "layers": describe_layers(model),  # the model_summary table's, without Keras in the flow's process
            "threads": threads,
            "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                         "keras": keras.__version__, "numpy": np.__version__},
            "epoch_seconds": [round(float(row["seconds"]), 3) for row in state.history],
            "wall_seconds": round(wall_seconds, 3),
            "started_unix": round(started_unix, 3),  # the training job's start and this run's end: the schedule
            "finished_unix": round(time.time(), 3),
            "peak_memory_mb": peak_memory_mb(),
            "final_metrics": {name: float(final[name]) if np.isfinite(final[name]) else None
                              for name in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "diverged": state.diverged,  # None, or the epoch whose loss was not finite and the last finite metrics
            "files": [path.name for path in folder.training_files],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_hparams(work.tensorboard, folder.run_id, spec, manifest["final_metrics"])  # TensorBoard's HParams
        manifest["file_hashes"] = folder_hashes(work)
        if after_run is not None:
            after_run(work, model, test, lambda line: log(f"{folder.run_id}: {line}"), state.predictions)
        write_json(work.manifest, manifest)  # last: a folder without it is never trusted
    return trained_run(spec, manifest)
