#!/usr/bin/env bash
# Runs one t5x-lite command on every worker of a Cloud TPU VM slice, which is how a
# multi-host JAX program starts: JAX on each worker finds its peers by itself.
#
#   tools/tpu_vm_run.sh TPU_NAME ZONE train experiments/t5_1_1_base.py \
#       --workdir /mnt/shared/runs/base --set data.data_dir=/mnt/shared/tensorflow_datasets
#
# Expects t5x-lite checked out at the same path ($REPO_DIR, default ~/t5x-lite) and
# installed (pip install -e . "jax[tpu]") on every worker. The workdir must be a path all
# workers share (an NFS or Filestore mount, or a bucket mounted with gcsfuse): every worker
# writes its checkpoint shards there.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE SUBCOMMAND [ARGS...]" >&2
  exit 2
fi
tpu_name=$1
zone=$2
shift 2
repo_dir=${REPO_DIR:-'~/t5x-lite'}
command="cd $repo_dir && t5x-lite $(printf '%q ' "$@")"
exec gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all --command "$command"
