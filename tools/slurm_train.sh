#!/usr/bin/env bash
# SLURM batch script for multi-node GPU training: one process per node, each using all of
# its node's GPUs. JAX reads the job layout (SLURM_NTASKS, SLURM_PROCID, the node list)
# and elects the first node as coordinator, so no address needs to be given.
#
#   sbatch --nodes=4 tools/slurm_train.sh experiments/t5_1_1_base.py /shared/runs/base \
#       --set data.data_dir=/shared/tensorflow_datasets
#
# The workdir must be on a filesystem all nodes share. PYTHON names the Python that has
# t5x-lite installed (default python3: the submitting shell's, as sbatch passes on its
# environment, so an active virtual environment is used).
#SBATCH --job-name=t5x-lite
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: sbatch --nodes=N $0 EXPERIMENT WORKDIR [--set KEY=VALUE ...]" >&2
  exit 2
fi
experiment=$1
workdir=$2
shift 2
# A preemption (scancel, time limit) sends SIGTERM: t5x-lite saves and exits cleanly.
srun --kill-on-bad-exit=1 "${PYTHON:-python3}" -m t5x_lite train "$experiment" --workdir "$workdir" "$@"
