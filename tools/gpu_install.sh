#!/usr/bin/env bash
# On the lent GPU machine (no network): installs the wheels tools/gpu_wheels.sh
# put in .whl/ (carried with the device call), then t5x-lite itself, editable.
#
#   tools/gpu_install.sh          from anywhere (PYTHON: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -d .whl ]; then
  echo "no .whl/: run tools/gpu_wheels.sh where PyPI is reachable and carry .whl" >&2
  exit 1
fi
# --no-deps throughout: .whl/ holds all the image lacks, and resolving could only
# make pip want another numpy or protobuf, which it cannot fetch, or replace the
# image's jax/flax/torch. The import below checks that nothing is missing.
"$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir .whl/*.whl
"$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
"$PY" -c "import t5x_lite.training.loop, tensorflow_datasets, tensorboardX, rouge_score.rouge_scorer"
