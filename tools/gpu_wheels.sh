#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with the wheels the lent GPU machine lacks: it has
# no network, and its image holds jax, flax, optax, orbax, numpy, protobuf,
# pyarrow, ... (/work/.library/device/KINDS.md) but not tensorflow-datasets and
# its needs, tensorboardX or rouge-score. Only those go in, so the kit stays small.
#
#   tools/gpu_wheels.sh                    here, with PyPI (PYTHON: python3)
#   device call: carry [".whl"], command "tools/gpu_install.sh && ..."
#   (tools/gpu_bench.sh runs tools/gpu_install.sh itself when it finds .whl/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl
mkdir .whl
# The machine's python3 is CPython 3.12 on x86-64. Versions are those the
# developer machines test with; one version of each, or pip stops the install.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
  --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  tensorflow-datasets==4.9.10 array_record==0.8.6 dm-tree==0.1.10 immutabledict==4.3.1 \
  simple-parsing==0.1.9 docstring-parser==0.18.0 tensorflow-metadata==1.21.0 \
  googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2 importlib_resources==7.1.0 \
  tensorboardX==2.6.5 nltk==3.10.4 defusedxml==0.7.1
# Published as source only: build their (pure-Python) wheels here.
"$PY" -m pip wheel --quiet --no-deps -w .whl promise==2.3 rouge-score==0.1.2
du -sh .whl
