#!/usr/bin/env bash
# Build the wheel, install it in a fresh virtual environment outside the checkout, and run the quick
# profile from the installed `mnist-study` command: what a worker or an image gets from `pip install`.
#   scripts/wheel_check.sh [MNIST_DIR]      (default: ../shared/datasets/mnist beside the repository)
# About 3 minutes on 2 cores, most of it installing TensorFlow (from pip's cache when warm).
set -euo pipefail
repository="$(cd "$(dirname "$0")/.." && pwd)"
mnist="${1:-$(cd "$repository/.." && pwd)/shared/datasets/mnist}"
python="${PYTHON:-python3}"
work="$(mktemp -d /tmp/mnist-wheel-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repository"
wheel="$(ls "$work"/dist/mnist_study-*.whl)"
# The wheel must hold every subpackage and the report's templates: an editable install would hide a gap.
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["mnist_models/architectures/__init__.py", "mnist_models/architectures/resnet.py",
          "mnist_models/templates/report.md.j2", "mnist_models/report.css", "tasks/training.py", "flows/cli.py"]
missing = [name for name in needed if name not in names]
licensed = any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in names)
if missing or not licensed:
    sys.exit(f"wheel {sys.argv[1]} lacks {missing or 'its LICENSE'}")
print(f"wheel holds {len(names)} files, every subpackage, the templates and the license")
PY

"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$wheel[cpu]"
cd "$work"  # nowhere near the checkout: only the installed package can be imported
export MNIST_MIRROR="$mnist" PREFECT_HOME="$work/prefect-home" PREFECT_SERVER_ANALYTICS_ENABLED=false
"$work/venv/bin/mnist-study" --help
"$work/venv/bin/mnist-study" study --profile quick --models dnn --learning-rates 0.001 --gradient-models "" \
  --artifacts-dir "$work/artifacts"
test -s "$work/artifacts/report/report.html"
"$work/venv/bin/python" -c "import mnist_models, flows; assert '$repository' not in mnist_models.__file__, mnist_models.__file__"
echo "wheel check passed: the installed mnist-study ran the quick profile into $work/artifacts"
