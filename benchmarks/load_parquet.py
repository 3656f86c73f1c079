"""Benchmark: load the MNIST training split from Parquet into a (60000, 28, 28, 1) float32 array.

Run:   python benchmarks/load_parquet.py [--artifacts-dir artifacts] [--repeats 5]
       (creates artifacts/data/mnist/train.parquet first with flows/prepare_data.py if it is missing;
        MNIST_MIRROR defaults to ../shared/datasets/mnist)
Time:  about 10-30 s (plus the data stage, about 20 s, when the Parquet has to be made).
Target: `mnist_models.data.load_split` takes < 1 s (median of the repeats, warm page cache).
Baselines, measured in the same run on the same machine:
       - decoding the raw gzip IDX file and normalizing it (`mnist_models.idx` + `normalize_images`),
         i.e. what loading would cost without the Parquet stage;
       - `np.load` of an uncompressed .npy holding the same float32 array: a lower bound (188 MB memcpy).
Makes: benchmarks/results/load_parquet.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import _common
from mnist_models import data as data_lib
from mnist_models import idx as idx_lib

TARGET_SECONDS = 1.0
IMAGES_FILE = "train-images-idx3-ubyte.gz"


def load_parquet(path: Path) -> np.ndarray:
    """The pipeline's loader."""
    return data_lib.load_split(path).images


def load_idx(path: Path) -> np.ndarray:
    """The baseline: read the gzip IDX file, decompress, parse, normalize, add the channel axis."""
    raw = idx_lib.parse_idx(idx_lib.gunzip(path.read_bytes(), name=str(path)), name=str(path))
    return data_lib.normalize_images(raw)[..., np.newaxis]


def load_npy(path: Path) -> np.ndarray:
    """The lower bound: the same array stored uncompressed."""
    return np.load(path)


def measure(function, path: Path, repeats: int) -> tuple[list[float], np.ndarray]:
    """One untimed warm-up call (fills the page cache), then `repeats` timed calls."""
    result = function(path)
    seconds = []
    for _ in range(repeats):
        elapsed, result = _common.timed(function, path)
        seconds.append(elapsed)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=_common.REPO_ROOT / "artifacts",
                        help="artifacts root holding data/mnist/train.parquet (default: artifacts)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per loader (default 5)")
    parser.add_argument("--output", type=Path, default=_common.RESULTS_DIR / "load_parquet.json")
    options = parser.parse_args()
    if options.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {options.repeats}")

    artifacts_dir = options.artifacts_dir.resolve()
    machine = _common.machine_facts()
    parquet_path = _common.ensure_parquet(artifacts_dir, _common.subprocess_environment())
    idx_path = parquet_path.parent / "raw" / IMAGES_FILE
    if not idx_path.exists():
        idx_path = Path(_common.mirror()) / IMAGES_FILE

    results = {}
    with tempfile.TemporaryDirectory(prefix="load-parquet-") as scratch:
        npy_path = Path(scratch) / "train_images.npy"
        np.save(npy_path, load_parquet(parquet_path))
        loaders = {
            "parquet (load_split)": (load_parquet, parquet_path),
            "gzip IDX + normalize (baseline)": (load_idx, idx_path),
            "np.load .npy (lower bound)": (load_npy, npy_path),
        }
        arrays = {}
        for name, (function, path) in loaders.items():
            seconds, arrays[name] = measure(function, path, options.repeats)
            results[name] = {"file": str(path), "file_mb": round(path.stat().st_size / 1e6, 1),
                             **_common.summarize(seconds)}
    reference = arrays["parquet (load_split)"]
    if reference.shape != (60000, 28, 28, 1) or reference.dtype != np.float32:
        raise SystemExit(f"load_split returned {reference.dtype} {reference.shape}; expected float32 (60000, 28, 28, 1)")
    identical = all(np.array_equal(reference, array) for array in arrays.values())

    parquet = results["parquet (load_split)"]
    idx_baseline = results["gzip IDX + normalize (baseline)"]
    lower_bound = results["np.load .npy (lower bound)"]
    ratios = {
        "parquet_over_idx_median": parquet["median_s"] / idx_baseline["median_s"],
        "parquet_over_npy_median": parquet["median_s"] / lower_bound["median_s"],
    }
    passed = parquet["median_s"] < TARGET_SECONDS
    machine["load_average_at_end"] = _common.load_average()

    rows = [[name, f"{result['file_mb']:.1f}", f"{result['best_s']:.3f}", f"{result['median_s']:.3f}",
             f"{result['median_s'] / parquet['median_s']:.2f}"] for name, result in results.items()]
    print(f"\nLoading the MNIST training images into float32 {reference.shape}, best and median of "
          f"{options.repeats} (after one warm-up call each)\n")
    print(_common.markdown_table(["loader", "file MB", "best s", "median s", "× parquet"], rows))
    print(f"\nparquet / IDX baseline: {ratios['parquet_over_idx_median']:.2f}   "
          f"parquet / .npy lower bound: {ratios['parquet_over_npy_median']:.2f}   "
          f"arrays identical: {identical}")
    print(f"target < {TARGET_SECONDS:g} s (median): {'PASS' if passed else 'FAIL'} "
          f"({parquet['median_s']:.3f} s)")
    print(f"machine: {machine['nproc']} cores, {machine['cpu_model']}, load average "
          f"{machine['load_average_at_start']} -> {machine['load_average_at_end']}")

    payload = {
        "benchmark": "load_parquet",
        "target": {"description": "load_split of train.parquet, median", "seconds_below": TARGET_SECONDS,
                   "passed": passed},
        "shape": list(reference.shape), "dtype": str(reference.dtype), "arrays_identical": identical,
        "repeats": options.repeats, "results": results, "ratios": ratios, "machine": machine,
    }
    print(f"wrote {_common.write_json(options.output, payload)}")


if __name__ == "__main__":
    main()
