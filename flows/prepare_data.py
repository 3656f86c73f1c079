"""Download, verify and normalize a data set to Parquet, with its facts table and first figure.

Run:   python flows/prepare_data.py --artifacts-dir artifacts [--dataset mnist|fashion-mnist]
                                    [--mirror URL_OR_DIR ...]
       (MNIST_MIRROR=../shared/datasets/mnist points at a local copy; FASHION_MNIST_MIRROR likewise)
Time:  about 20 s the first time from a local folder; a few seconds when everything is cached.
Makes: artifacts/data/<dataset>/{raw/*.gz,train.parquet,test.parquet},
       artifacts/tables/dataset_facts.{parquet,csv,md}, artifacts/figures/first_25_images.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow
from prefect.states import Failed

from flows._runtime import StudyFailedError, prefect_api, quiet_defaults, resolve_mirrors, run_cli
from mnist_models.config import artifacts_paths
from mnist_models.datasets import SPLIT_FILES, get_dataset
from mnist_models.download import normalize_mirror
from mnist_models.io import ensure_writable_directory
from mnist_models.tables import TABLE_FORMATS
from tasks.caching import cache_storage, with_cache
from tasks.data import (
    content_hash,
    download_idx,
    normalize_split,
    render_first_images,
    verify_idx,
    write_dataset_facts,
)


@flow(name="prepare-data", log_prints=False)
def prepare_data(
    dataset: str = "mnist",
    artifacts_dir: str = "artifacts",
    mirrors: list[str] | None = None,
    refresh: bool = False,
) -> dict:
    """Download and verify the four IDX files, then write Parquet splits, facts and figure 1.1."""
    spec = get_dataset(dataset)
    mirror_list = [normalize_mirror(mirror) for mirror in resolve_mirrors(dataset, mirrors)]
    paths = artifacts_paths(ensure_writable_directory(artifacts_dir))
    storage = cache_storage(paths["root"])
    data_dir = paths["data"] / dataset
    raw_dir = data_dir / "raw"

    present = {name: verify_idx.submit(str(raw_dir / name), md5) for name, md5 in spec.md5.items()}
    downloads = {
        name: with_cache(download_idx, storage, refresh=refresh or not present[name].result()).submit(
            name, md5, mirror_list, str(raw_dir)
        )
        for name, md5 in spec.md5.items()
    }
    for future in downloads.values():
        future.wait()
    failures = [future.state.message for future in downloads.values() if not future.state.is_completed()]
    if failures:
        return Failed(message="\n".join(failures))
    records = {name: future.result() for name, future in downloads.items()}
    file_hashes = {name: record["sha256"] for name, record in records.items()}
    raw_paths = {name: record["path"] for name, record in records.items()}

    splits = {}
    for split, (images_name, labels_name) in SPLIT_FILES.items():
        output = data_dir / f"{split}.parquet"
        split_hash = content_hash({name: file_hashes[name] for name in (images_name, labels_name)})
        splits[split] = with_cache(normalize_split, storage, [output], refresh).submit(
            raw_paths[images_name], raw_paths[labels_name], split_hash, str(output)
        )

    data_hash = content_hash(file_hashes)
    facts_outputs = [paths["tables"] / f"dataset_facts.{fmt}" for fmt in TABLE_FORMATS]
    facts = with_cache(write_dataset_facts, storage, facts_outputs, refresh).submit(
        raw_paths, data_hash, str(paths["tables"])
    )
    figure_path = paths["figures"] / "first_25_images.png"
    figure = with_cache(render_first_images, storage, [figure_path], refresh).submit(
        splits["train"].result()["path"], data_hash, str(figure_path)
    )
    return {
        "dataset": dataset,
        "content_hash": data_hash,
        "train": splits["train"].result()["path"],
        "test": splits["test"].result()["path"],
        "dataset_facts": facts.result(),
        "first_25_images": figure.result(),
    }


def main(argv: list[str] | None = None) -> dict:
    """Command line: parse options, check them, run the flow."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", default="artifacts", help="root of every output (default: artifacts)")
    parser.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    parser.add_argument(
        "--mirror", action="append", dest="mirrors", metavar="URL_OR_DIR",
        help="http(s)://, file:// URL or local directory holding the four .gz files; repeat to give "
        "fallbacks in order (default: $MNIST_MIRROR, else the public mirrors)",
    )
    parser.add_argument("--refresh", action="store_true", help="ignore the cache and redo every step")
    options = parser.parse_args(argv)
    quiet_defaults()
    # Check what can be checked before starting Prefect, so bad input fails fast and cleanly.
    get_dataset(options.dataset)
    for mirror in resolve_mirrors(options.dataset, options.mirrors):
        normalize_mirror(mirror)
    ensure_writable_directory(options.artifacts_dir)
    with prefect_api():
        state = prepare_data(
            dataset=options.dataset,
            artifacts_dir=str(Path(options.artifacts_dir).resolve()),
            mirrors=options.mirrors,
            refresh=options.refresh,
            return_state=True,
        )
        if not state.is_completed():
            raise StudyFailedError(state.message or f"data preparation ended {state.name}")
        result = state.result()
    print(f"Parquet: {result['train']}, {result['test']}")
    print(f"Facts:   {result['dataset_facts']}\nFigure:  {result['first_25_images']}")
    return result


if __name__ == "__main__":
    run_cli(main)
