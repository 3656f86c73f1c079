"""Download, verify and normalize a data set to Parquet, with its facts table and first figure.

Run:   python flows/prepare_data.py --artifacts-dir artifacts [--dataset mnist|fashion-mnist]
                                    [--mirror URL_OR_DIR ...] [--refresh]
       (MNIST_MIRROR=../shared/datasets/mnist points at a local copy; FASHION_MNIST_MIRROR likewise)
Time:  about 20 s the first time from a local folder; a few seconds when everything is reused.
Makes: artifacts/data/<dataset>/{raw/*.gz,train.parquet,test.parquet},
       artifacts/tables/dataset_facts.{parquet,csv,md}, artifacts/figures/first_25_images.png
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Failed

from flows._runtime import parse_config, resolve_mirrors, run_cli, run_flow
from mnist_models.config import DataConfig
from mnist_models.datasets import SPLIT_FILES, get_dataset
from mnist_models.download import normalize_mirror
from mnist_models.atomic_files import DiskFullError, remove_stale_temporaries
from mnist_models.hashing import file_sha256
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import artifacts_lock
from mnist_models.engine import Engine, Produced
from mnist_models.provenance import Decision, StageKey, code_closure, digest
from mnist_models.records import PreparedData
from tasks.caching import study_engine, write_decisions
from tasks.data import download_idx, normalize_split, verified_sha256, verify_idx, write_dataset_facts
from tasks.figures import render_first_images


class DataStageError(RuntimeError):
    """A raw file could not be had from any mirror; the message says which and why."""


def prepare(config: DataConfig, layout: ArtifactsLayout, engine: Engine) -> PreparedData:
    """Verified raw files (downloaded only when missing or bad), Parquet splits, facts and figure 1.1."""
    spec = get_dataset(config.dataset)
    folder = layout.data(config.dataset)
    raw = {name: folder.raw_file(name) for name in spec.md5}
    refresh = "data" in engine.refresh
    present = {name: verify_idx.submit(path, spec.md5[name]) for name, path in raw.items()}
    hashes = {name: None if refresh else future.result() for name, future in present.items()}
    missing = [name for name, content_hash in hashes.items() if content_hash is None]
    if missing:
        mirrors = [normalize_mirror(mirror) for mirror in resolve_mirrors(config.dataset, list(config.mirrors or ()))]
        downloads = {name: download_idx.submit(name, spec.md5[name], mirrors, raw[name]) for name in missing}
        for future in downloads.values():
            future.wait()
        failures = [future.state.message for future in downloads.values() if not future.state.is_completed()]
        if failures:
            raise DataStageError("\n".join(failures))
        hashes.update({name: future.result() for name, future in downloads.items()})
    for name in raw:
        reason = ("--refresh" if refresh else "missing or failed verification") if name in missing else \
            "verified against its published checksum"
        engine.record(Decision(stage="data", item=f"{config.dataset}/raw/{name}",
                               action="recomputed" if name in missing else "reused", reason=reason))

    keys = _split_keys(config.dataset, hashes)
    for split, (images, labels) in SPLIT_FILES.items():
        output = folder.split(split)
        engine.stage("data", f"{config.dataset}/{split}.parquet", keys[split],
                     lambda: Produced(None, [normalize_split(raw[images], raw[labels], output)]))
    engine.stage("data", "dataset_facts", keys["dataset_facts"],
                 lambda: Produced(None, write_dataset_facts(raw, layout.tables_dir)))
    # Downstream stages read the Parquet, so they key on its content: a change in how it is made reaches them.
    parquet = {split: file_sha256(folder.split(split)) for split in SPLIT_FILES}
    engine.stage("data", "first_25_images", _figure_key(config.dataset, parquet),
                 lambda: Produced(None, [render_first_images(folder.split("train"), layout.figure("first_25_images"))]))
    return _prepared(config.dataset, layout, parquet)


def _split_keys(dataset: str, hashes: dict[str, str]) -> dict[str, StageKey]:
    """The keys of the Parquet splits and the facts table: the raw files' content and the data code."""
    # The data stage builds no model: of the model registry (imported with the package), no entry counts.
    data_code = code_closure("tasks.data", entries={"mnist_models.architectures": ("ARCHITECTURES", "")})
    keys = {split: StageKey(inputs={"data": digest({name: hashes[name] for name in files})}, code=data_code)
            for split, files in SPLIT_FILES.items()}
    keys["dataset_facts"] = StageKey(parameters={"dataset": dataset}, inputs={"data": digest(hashes)}, code=data_code)
    return keys


def _figure_key(dataset: str, parquet: dict[str, str]) -> StageKey:
    return StageKey(parameters={"dataset": dataset}, inputs={"data": parquet["train"]}, code=code_closure("tasks.figures"))


def _prepared(dataset: str, layout: ArtifactsLayout, parquet: dict[str, str]) -> PreparedData:
    folder = layout.data(dataset)
    return PreparedData(dataset=dataset, content_hash=digest(parquet), train=layout.relative(folder.split("train")),
                        test=layout.relative(folder.split("test")), test_hash=parquet["test"])


def plan_data(config: DataConfig, layout: ArtifactsLayout, engine: Engine) -> tuple[list[Decision], PreparedData | None]:
    """The data stage's decisions without downloading or writing anything, and the data when it is all reusable."""
    spec = get_dataset(config.dataset)
    folder = layout.data(config.dataset)
    refresh = "data" in engine.refresh
    hashes = {name: None if refresh else verified_sha256(folder.raw_file(name), spec.md5[name]) for name in spec.md5}
    decisions = [Decision(stage="data", item=f"{config.dataset}/raw/{name}",
                          action="reused" if content_hash else "recomputed",
                          reason="verified against its published checksum" if content_hash else
                          "--refresh" if refresh else "missing or failed verification")
                 for name, content_hash in hashes.items()]
    items = [*(f"{config.dataset}/{split}.parquet" for split in SPLIT_FILES), "dataset_facts", "first_25_images"]
    if not all(hashes.values()):
        return decisions + [Decision(stage="data", item=item, action="recomputed", reason="upstream recomputed (data)")
                            for item in items], None
    keys = _split_keys(config.dataset, hashes)
    decisions += [engine.decide("data", item, keys[key])[0] for item, key in zip(items, [*SPLIT_FILES, "dataset_facts"])]
    if any(decision.action == "recomputed" for decision in decisions[-3:-1]):
        return decisions + [Decision(stage="data", item="first_25_images", action="recomputed",
                                     reason="upstream recomputed (data)")], None
    parquet = {split: file_sha256(folder.split(split)) for split in SPLIT_FILES}
    decisions.append(engine.decide("data", "first_25_images", _figure_key(config.dataset, parquet))[0])
    return decisions, _prepared(config.dataset, layout, parquet)


@flow(name="prepare-data", log_prints=False)
def prepare_data(config: DataConfig = DataConfig()) -> PreparedData:
    """Download and verify the four IDX files, then write Parquet splits, facts and figure 1.1."""
    layout = ArtifactsLayout.at(config.artifacts_dir)
    engine = study_engine(layout, config.refresh, get_run_logger().info)
    with artifacts_lock(layout.root):
        remove_stale_temporaries(layout.root)
        try:
            data = prepare(config, layout, engine)
        except (DataStageError, DiskFullError) as error:
            return Failed(message=str(error))  # nothing half-written: no Parquet, no decisions table
        write_decisions(engine, layout.tables_dir)
        return data


def main(argv: list[str] | None = None) -> PreparedData:
    """Command line: parse and check the options, run the flow, say where the outputs are."""
    config = parse_config(DataConfig, __doc__.split("\n\n")[0], argv)
    data = run_flow(prepare_data, config)
    root = ArtifactsLayout.at(config.artifacts_dir)
    print(f"Parquet: {root.absolute(data.train)}, {root.absolute(data.test)}")
    print(f"Facts:   {root.table('dataset_facts')['parquet']}\nFigure:  {root.figure('first_25_images')}")
    return data


if __name__ == "__main__":
    run_cli(main)
