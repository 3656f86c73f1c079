"""Benchmark: load the MNIST training split from Parquet into a (60000, 28, 28, 1) float32 array.

Run:   python benchmarks/load_parquet.py [--repeats 5] [--passes 3]
       (reads train-images/train-labels from MNIST_MIRROR, default ../shared/datasets/mnist, and writes
        train.parquet with the pipeline's own `write_split_parquet` into a temporary folder)
Time:  about 2 minutes on 2 cores.
Target: `mnist_models.data.load_split` of that file within 3x of `np.load` of the same array
        (ratio of the medians, warm page cache).
Measured in the same run, each loader in a fresh process (one warm-up call, then the timed calls), so
that no loader inherits another's heap or allocator state, in several passes over all loaders, so that
other work on the machine slows all of them alike:
       - lower bound: `np.load` of an uncompressed .npy holding the same float32 array (a 188 MB copy);
       - `load_split`'s other path, Arrow's decoder (what it falls back to for layouts its page reader,
         mnist_models/parquet_pages.py, declines), on the same file;
       - baseline: decoding the raw gzip IDX file and normalizing it (loading without the Parquet stage);
       - other layouts of the same table, read by the same `load_split`: the previous layout (zstd,
         dictionary pages, one row group, nullable items) and the chosen layout with one setting changed;
       - Arrow's decoding alone (`pyarrow.parquet.read_table` of the chosen file, memory map and threads
         on and off), without the NumPy conversion.
Every loader that returns images is checked to return the same array bit for bit. The warm-up call's
time is recorded too: a pipeline process loads a split once, and its first call also pays one-time
library set-up (for Parquet, importing pyarrow.dataset and starting Arrow's thread pools).
Makes: benchmarks/results/load_parquet.json and benchmarks/results/load_parquet.md
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import multiprocessing
import statistics
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import _common
from mnist_models import data as data_lib
from mnist_models import idx as idx_lib

TARGET_RATIO = 3.0
IMAGES_FILE = "train-images-idx3-ubyte.gz"
LABELS_FILE = "train-labels-idx1-ubyte.gz"
CHOSEN = "load_split, chosen layout (write_split_parquet)"
LOWER_BOUND = "np.load .npy (lower bound)"
IDX_BASELINE = "gzip IDX + normalize (baseline)"
ARROW_PATH = "load_split's Arrow path (its fallback), chosen layout"
# The chosen layout with one setting changed at a time, and the layout it replaced.
ALTERNATIVE_LAYOUTS = {
    "previous layout: zstd, dictionary, statistics, 1 row group, nullable items": dict(
        nullable_items=True, compression="zstd", use_dictionary=True, write_statistics=True, row_group_size=60000),
    "chosen but 1 row group of 60,000": dict(row_group_size=60000),
    "chosen but row groups of 250": dict(row_group_size=250),
    "chosen but row groups of 4,000": dict(row_group_size=4000),
    "chosen but nullable items": dict(nullable_items=True),
    "chosen but lz4": dict(compression="lz4"),
    "chosen but zstd": dict(compression="zstd"),
    "chosen but dictionary-encoded pixels": dict(use_dictionary=True),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzip IDX file."""
    return idx_lib.parse_idx(idx_lib.gunzip(path.read_bytes(), name=str(path)), name=str(path))


def load_parquet(path: Path) -> np.ndarray:
    """The pipeline's loader."""
    return data_lib.load_split(path).images


def load_idx(path: Path) -> np.ndarray:
    """The baseline: read the gzip IDX file, decompress, parse, normalize, add the channel axis."""
    return data_lib.normalize_images(read_idx(path))[..., np.newaxis]


def load_parquet_through_arrow(path: Path) -> np.ndarray:
    """load_split's fallback for layouts the page reader declines: Arrow decodes the pixel column."""
    table = pq.read_table(path, columns=["pixels"], memory_map=True, use_threads=True)
    return data_lib._column_values(table, "pixels").reshape(-1, 28, 28, 1)


def load_npy(path: Path) -> np.ndarray:
    """The lower bound: the same array stored uncompressed."""
    return np.load(path)


def read_arrow(path: Path, memory_map: bool, use_threads: bool) -> pa.Table:
    """Arrow's decoding of the whole file into a Table, with no conversion to NumPy."""
    return pq.read_table(path, memory_map=memory_map, use_threads=use_threads)


def write_alternative(chosen: Path, path: Path, nullable_items: bool = False, **options) -> Path:
    """Rewrite the chosen file's table with write_split_parquet's writer options, overridden by `options`."""
    table = pq.read_table(chosen)
    if nullable_items:
        pixels_type = pa.list_(pa.field("element", pa.float32(), nullable=True), data_lib.IMAGE_SIZE)
        table = table.cast(table.schema.set(2, pa.field("pixels", pixels_type)))
    pq.write_table(table, path, **{**data_lib.PARQUET_WRITE_OPTIONS, **options})
    return path


def lscpu_facts() -> dict:
    """The CPU as lscpu describes it (model, family/model/stepping, topology, caches, AVX-512)."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    wanted = ["Model name", "Vendor ID", "CPU family", "Model", "Stepping", "CPU(s)", "Thread(s) per core",
              "Core(s) per socket", "Socket(s)", "L2 cache", "L3 cache", "Hypervisor vendor"]
    facts = {key: fields[key] for key in wanted if key in fields}
    facts["avx512f"] = "avx512f" in fields.get("Flags", "").split()
    return facts


def fingerprint(array: np.ndarray) -> str:
    """dtype, shape and SHA-256 of the bytes: equal fingerprints mean bit-for-bit equal arrays."""
    return f"{array.dtype} {array.shape} {hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()}"


def time_loader(function, path: Path, repeats: int) -> tuple[list[float], float, str | None]:
    """A warm-up call, then `repeats` timed calls: their seconds, the warm-up's seconds, the images' fingerprint."""
    first_call, result = _common.timed(function, path)
    images = fingerprint(result) if isinstance(result, np.ndarray) else None
    seconds = []
    for _ in range(repeats):
        del result  # free the previous array first, as a program that loads once would have nothing allocated
        elapsed, result = _common.timed(function, path)
        seconds.append(elapsed)
    return seconds, first_call, images


def measure_in_fresh_processes(loaders: dict, repeats: int, passes: int) -> dict[str, dict]:
    """time_loader for every loader, each time in a new process, `passes` times over all loaders."""
    context = multiprocessing.get_context("spawn")
    measured = {name: {"seconds": [], "first_call_s": [], "images": set(), "load_average_before": []}
                for name in loaders}
    for _ in range(passes):
        for name, (function, path) in loaders.items():
            measured[name]["load_average_before"].append(_common.load_average()[0])
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                seconds, first_call, images = pool.submit(time_loader, function, path, repeats).result()
            measured[name]["seconds"] += seconds
            measured[name]["first_call_s"].append(first_call)
            measured[name]["images"].add(images)
    return measured


def layout_facts(path: Path) -> dict:
    """How a Parquet file stores its pixels: type, compression, encodings, statistics, row groups."""
    metadata = pq.read_metadata(path)
    pixels = metadata.row_group(0).column(metadata.schema.names.index("element"))
    return {"pixels_type": str(pq.read_schema(path).field("pixels").type), "compression": pixels.compression,
            "encodings": list(pixels.encodings), "statistics": pixels.is_stats_set,
            "row_groups": metadata.num_row_groups, "rows_per_row_group": metadata.row_group(0).num_rows}


def describe_layout(facts: dict) -> str:
    """One short line for the table: compression, dictionary, statistics, row group size, nullable items."""
    return ", ".join([
        facts["compression"].lower(),
        "dictionary" if any("DICTIONARY" in encoding for encoding in facts["encodings"]) else "plain",
        "pixel statistics" if facts["statistics"] else "no pixel statistics",
        f"{facts['row_groups']} x {facts['rows_per_row_group']:,} rows",
        "items not null" if "not null" in facts["pixels_type"] else "nullable items",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per loader and pass (default 5)")
    parser.add_argument("--passes", type=int, default=3, help="passes over all loaders (default 3)")
    parser.add_argument("--results-dir", type=Path, default=_common.RESULTS_DIR)
    options = parser.parse_args()
    for option in ("repeats", "passes"):
        if getattr(options, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(options, option)}")

    machine = _common.machine_facts()
    machine["lscpu"] = lscpu_facts()
    machine["cpu_model"] = machine["lscpu"].get("Model name", machine["cpu_model"])
    mirror = Path(_common.mirror())
    idx_path = mirror / IMAGES_FILE
    for path in (idx_path, mirror / LABELS_FILE):
        if not path.exists():
            raise SystemExit(f"{path} does not exist; set MNIST_MIRROR to a folder holding the MNIST IDX files")

    with tempfile.TemporaryDirectory(prefix="load-parquet-") as scratch:
        scratch = Path(scratch)
        chosen_path = data_lib.write_split_parquet(read_idx(idx_path), read_idx(mirror / LABELS_FILE),
                                                   scratch / "train.parquet")
        reference = load_idx(idx_path)
        npy_path = scratch / "train_images.npy"
        np.save(npy_path, reference)
        loaders = {
            CHOSEN: (load_parquet, chosen_path),
            LOWER_BOUND: (load_npy, npy_path),
            ARROW_PATH: (load_parquet_through_arrow, chosen_path),
            IDX_BASELINE: (load_idx, idx_path),
        }
        for number, (name, layout) in enumerate(ALTERNATIVE_LAYOUTS.items()):
            alternative = write_alternative(chosen_path, scratch / f"layout{number}.parquet", **layout)
            loaders[name] = (load_parquet, alternative)
        for memory_map in (True, False):
            for use_threads in (True, False):
                name = f"Arrow read_table only, memory_map={memory_map}, use_threads={use_threads}"
                loaders[name] = (functools.partial(read_arrow, memory_map=memory_map, use_threads=use_threads),
                                 chosen_path)
        measured = measure_in_fresh_processes(loaders, options.repeats, options.passes)
        expected = fingerprint(reference)
        identical = {name: record["images"] == {expected} for name, record in measured.items()
                     if record["images"] != {None}}
        results = {name: {"file": path.name, "file_mb": round(path.stat().st_size / 1e6, 1),
                          "layout": layout_facts(path) if path.suffix == ".parquet" else None,
                          "identical_images": identical.get(name),
                          "load_average_before": measured[name]["load_average_before"],
                          "first_call_s": measured[name]["first_call_s"],
                          **_common.summarize(measured[name]["seconds"])}
                   for name, (_function, path) in loaders.items()}

    ratios = {name: result["median_s"] / results[LOWER_BOUND]["median_s"] for name, result in results.items()}
    ratio = ratios[CHOSEN]
    passed = ratio <= TARGET_RATIO and all(identical.values())
    machine["load_average_at_end"] = _common.load_average()
    payload = {
        "benchmark": "load_parquet",
        "target": {"description": "load_split of train.parquet / np.load of the same array, medians",
                   "ratio_at_most": TARGET_RATIO, "ratio": ratio, "passed": passed},
        "ratio_of_best_times": results[CHOSEN]["best_s"] / results[LOWER_BOUND]["best_s"],
        "shape": list(reference.shape), "dtype": str(reference.dtype),
        "arrays_identical": all(identical.values()), "repeats": options.repeats, "passes": options.passes,
        "results": results, "ratios_to_np_load": ratios,
        "ratio_to_idx_baseline": results[CHOSEN]["median_s"] / results[IDX_BASELINE]["median_s"],
        "machine": machine,
    }
    markdown = render_markdown(payload)
    print(markdown)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    (options.results_dir / "load_parquet.md").write_text(markdown)
    print(f"wrote {_common.write_json(options.results_dir / 'load_parquet.json', payload)}")
    print(f"wrote {options.results_dir / 'load_parquet.md'}")


def render_markdown(payload: dict) -> str:
    """The results as a short Markdown page: verdict, machine, one row per loader."""
    machine, results, target = payload["machine"], payload["results"], payload["target"]
    lscpu = machine["lscpu"]
    rows = [[name, describe_layout(result["layout"]) if result["layout"] else "", f"{result['file_mb']:.1f}",
             f"{result['best_s']:.4f}", f"{result['median_s']:.4f}", f"{payload['ratios_to_np_load'][name]:.2f}",
             f"{statistics.median(result['first_call_s']):.4f}",
             {True: "yes", False: "NO", None: "(Table)"}[result["identical_images"]],
             " ".join(f"{load:.1f}" for load in result["load_average_before"])]
            for name, result in results.items()]
    table = _common.markdown_table(["loader", "pixel layout", "file MB", "best s", "median s", "median / np.load",
                                    "first call s", "same images", "load average before each pass"], rows)
    return "\n".join([
        "# Loading train.parquet",
        "",
        f"Target: `load_split` of the training split within {target['ratio_at_most']:g}x of `np.load` of the same "
        f"array (medians). Ratio **{target['ratio']:.2f}**: {'PASS' if target['passed'] else 'FAIL'} "
        f"(ratio of the best times {payload['ratio_of_best_times']:.2f}; `load_split` / gzip IDX baseline "
        f"{payload['ratio_to_idx_baseline']:.2f}).",
        "",
        f"Date {machine['date']}; {machine['nproc']} cores (nproc), {machine['cpu_model']} (lscpu: family "
        f"{lscpu.get('CPU family', '?')}, model {lscpu.get('Model', '?')}, stepping {lscpu.get('Stepping', '?')}, "
        f"AVX-512 {'yes' if lscpu.get('avx512f') else 'no'}, L2 {lscpu.get('L2 cache', '?')}, L3 "
        f"{lscpu.get('L3 cache', '?')}), {machine['memory_gib']} GiB; "
        + ", ".join(f"{package} {version}" for package, version in machine["versions"].items())
        + f"; load average {machine['load_average_at_start']} -> {machine['load_average_at_end']}.",
        "",
        f"Each loader in a fresh process: one warm-up call (warm page cache), then {payload['repeats']} timed "
        f"calls; {payload['passes']} passes over all loaders (first call s: median of the passes' warm-up calls, "
        f"which include one-time library set-up). Images {tuple(payload['shape'])} {payload['dtype']}, "
        "compared by SHA-256 with the IDX baseline's. Parquet files other than the chosen one hold the same "
        "table rewritten with one writer setting changed; `load_split` reads them all: plain uncompressed ones "
        "page by page (mnist_models/parquet_pages.py), compressed or dictionary-encoded ones through Arrow. Arrow "
        "decodes on every core and `np.load` copies on one, so other work on the machine (see the load "
        "averages) slows the Arrow loaders more; the best times come closer to an idle machine's ratio.",
        "",
        table,
        "",
    ])


if __name__ == "__main__":
    main()
