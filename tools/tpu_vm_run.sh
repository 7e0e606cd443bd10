#!/usr/bin/env bash
# Runs one t5x-lite command on every worker of a Cloud TPU VM slice, which is how a
# multi-host JAX program starts: JAX on each worker finds its peers by itself (through
# the TPU VM's metadata server).
#
#   tools/tpu_vm_run.sh TPU_NAME ZONE train experiments/t5_1_1_base.py \
#       --workdir /mnt/shared/runs/base --set data.data_dir=/mnt/shared/tensorflow_datasets
#
# Expects t5x-lite checked out at the same path ($REPO_DIR, default ~/t5x-lite) and
# installed (pip install -e . "jax[tpu]") on every worker. The workdir must be a path all
# workers share (an NFS or Filestore mount, or a bucket mounted with gcsfuse): every worker
# writes its checkpoint shards there.
#
# The command runs as `PYTHON -m t5x_lite` over a non-interactive ssh session, where a
# virtual environment is not active and ~/.local/bin may not be on PATH. PYTHON is the
# Python that has t5x-lite installed, as a path on the workers; by default
# REPO_DIR/.venv/bin/python if that exists there, else python3.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: [REPO_DIR=DIR] [PYTHON=PATH] $0 TPU_NAME ZONE SUBCOMMAND [ARGS...]" >&2
  exit 2
fi
tpu_name=$1
zone=$2
shift 2
repo_dir=${REPO_DIR:-'~/t5x-lite'}
# Like REPO_DIR, PYTHON is read by the workers' shell (so ~ is their home directory).
python=${PYTHON:-'$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )'}
command="cd $repo_dir && exec $python -m t5x_lite $(printf '%q ' "$@")"
exec gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all --command "$command"
