#!/usr/bin/env bash
# t5x-lite against the Hugging Face PyTorch peer on one GPU, in one device call
# (docs/performance.md). Run from anywhere; the package need not be installed.
# The machine lacks tensorflow-datasets and a few more: run tools/gpu_wheels.sh
# here first and name .whl in the device call's carry (tools/gpu_install.sh
# installs them there; preflight below runs it when tensorflow_datasets is missing).
#
#   tools/gpu_bench.sh [RUN_OR_GROUP ...]      default: all
#   tools/gpu_bench.sh summary FILE...         one table over several calls' bench.jsonl
#
# Groups (each holds what its comparison needs, so a group fits one call):
#   base   t5x-base (b128) hf-base (b128) t5x-base-cudnn
#   small  t5x-small (b256) hf-small (b256)
#   large  t5x-large: b128 (remat dots_no_batch, 56 GiB compiled for an H100),
#          else b128 remat full, else b64
#   xl     t5x-xl: b64 remat dots_no_batch, else b64 full (28 GiB with state),
#          else b32 full
# (Alternatives ordered by `t5x-lite info --target h100`: docs/performance.md.)
#   ablate base b128, one switch each against t5x-base: t5x-base-noscan,
#          t5x-base-chunked (train.loss_chunk_size=38), t5x-base-dots (remat),
#          t5x-base-noflags (XLA_FLAGS=""), t5x-base-none (remat none):
#          which optimisations to keep
#   packing the packed step (segment masks, as training on packed data runs it)
#          with XLA and cuDNN attention: t5x-base-packed, t5x-base-cudnn-packed
# The speed runs time full rows of one example (data.pack=false, the peers'
# workload); the packed and real-data runs set data.pack=true.
#   input  t5x-base-real: b128 fed by the real loader (python_docs) against the
#          same loop on synthetic batches (the data issue's <= 5% slowdown)
# A run that fails (out of memory, ...) falls back to its next alternative;
# every attempt is logged.
#
# Output: one JSON line per attempt in $OUT/bench.jsonl (failures carry
# "error"), each run's stderr in $OUT/logs/, and a summary table at the end.
# Environment: OUT (default runs/bench), PYTHON (python3), STEPS (20),
# WARMUP (3), RUN_TIMEOUT seconds per attempt (420), GPU_TESTS (1; 0 skips the gate). XLA_FLAGS, if set (even
# empty), replaces t5x_lite.xla_flags.GPU_FLAGS.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench}
PY=${PYTHON:-python3}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-420}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
# JAX reserves 75% of GPU memory by default; give it what PyTorch can take.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
mkdir -p "$OUT/logs"
JSONL="$OUT/bench.jsonl"
T5X_OK=1
ATTEMPTS=0

log_line() {  # NAME ARGS STATUS LOG STDOUT -> one JSON line in $JSONL
  "$PY" - "$@" >>"$JSONL" <<'EOF'
import json, sys
name, args, status, log, stdout = sys.argv[1:]
lines = [l for l in stdout.splitlines() if l.startswith("{")]
if status == "0":
  record = json.loads(lines[-1]) if lines else {}  # A test run prints no record.
else:
  with open(log, errors="replace") as f:
    tail = [l.strip() for l in f.read().splitlines() if l.strip()][-3:]
  record = {"error": f"exit status {status}: " + " | ".join(tail)}
print(json.dumps({"run": name, "args": args, **record}))
EOF
}

attempt() {  # NAME COMMAND... -> status of the command; logs its line
  local name=$1 stdout status
  shift
  ATTEMPTS=$((ATTEMPTS + 1))
  local log="$OUT/logs/$ATTEMPTS-$name.log"
  echo "== $name: $*" >&2
  stdout=$(timeout --kill-after=15 "$RUN_TIMEOUT" "$@" 2>"$log")
  status=$?
  log_line "$name" "$*" "$status" "$log" "$stdout"
  tail -n 1 "$JSONL" | cut -c1-240 >&2
  return $status
}

t5x() {  # NAME EXPERIMENT "ARGS ALTERNATIVE" ... : first alternative that runs
  local name=$1 experiment=$2 alternative
  shift 2
  if [ "$T5X_OK" != 1 ]; then
    log_line "$name" "$experiment" "skipped" "$OUT/logs/preflight.log" ""
    return 1
  fi
  for alternative in "$@"; do
    # Full rows of one example, as the peers run (no packing masks); a run that
    # names data.pack=true after this gets the packed step.
    # shellcheck disable=SC2086  # each alternative is a list of arguments
    attempt "$name" "$PY" -m t5x_lite benchmark "$experiment" --steps "$STEPS" --warmup "$WARMUP" \
      --set data.pack=false $alternative && return 0
  done
  return 1
}

hf() {  # NAME SIZE BATCH
  attempt "$1" "$PY" tools/bench_hf_t5.py --size "$2" --batch "$3" --steps "$STEPS" --warmup "$WARMUP"
}

preflight() {
  # The image lacks tensorflow_datasets and a few more (t5x-lite imports them
  # lazily, hence named here): install the carried wheels (.whl/) if missing.
  if ! "$PY" -c "import t5x_lite.training.loop, tensorflow_datasets" 2>"$OUT/logs/preflight.log" && [ -d .whl ]; then
    PYTHON="$PY" tools/gpu_install.sh >>"$OUT/logs/preflight.log" 2>&1
  fi
  if ! "$PY" -c "import t5x_lite.training.loop" 2>>"$OUT/logs/preflight.log"; then
    echo "t5x_lite.training.loop does not import (see $OUT/logs/preflight.log); t5x-lite runs skipped" >&2
    T5X_OK=0
    return
  fi
  # The fast paths must compute what the reference computes on this GPU too (cuDNN
  # attention cannot run in the CPU suite): recorded as run "gpu-tests". GPU_TESTS=0
  # skips it, for a later call on a machine where it passed already.
  [ "${GPU_TESTS:-1}" = 0 ] || attempt gpu-tests env JAX_PLATFORMS=cuda "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_model.py::test_fused_attention_path_matches_reference
  # XLA aborts on flags it does not know: probe ours once, drop them if refused.
  if [ -z "${XLA_FLAGS+set}" ] && ! "$PY" -c "
from t5x_lite import xla_flags
xla_flags.set_gpu_flags()
import jax
jax.numpy.zeros(1).block_until_ready()" >>"$OUT/logs/preflight.log" 2>&1; then
    echo "XLA refused t5x_lite.xla_flags.GPU_FLAGS; running with XLA_FLAGS=''" >&2
    export XLA_FLAGS=""
  fi
}

run_one() {
  case $1 in
    t5x-base) t5x t5x-base experiments/t5_1_1_base.py "--batch 128" \
        "--batch 128 --set model.remat_policy=dots_no_batch" ;;
    t5x-base-cudnn) t5x t5x-base-cudnn experiments/t5_1_1_base.py \
        "--batch 128 --set model.attention_impl=cudnn" \
        "--batch 128 --set model.attention_impl=cudnn --set model.remat_policy=dots" ;;
    hf-base) hf hf-base base 128 ;;
    t5x-small) t5x t5x-small experiments/t5_1_1_small.py "--batch 256" \
        "--batch 256 --set model.remat_policy=dots_no_batch" ;;
    hf-small) hf hf-small small 256 ;;
    t5x-large) t5x t5x-large experiments/t5_1_1_large.py "--batch 128" \
        "--batch 128 --set model.remat_policy=full" "--batch 64" ;;
    t5x-xl) t5x t5x-xl experiments/t5_1_1_xl.py "--batch 64 --set model.remat_policy=dots_no_batch" \
        "--batch 64" "--batch 32" ;;
    t5x-base-noscan) t5x t5x-base-noscan experiments/t5_1_1_base.py \
        "--batch 128 --set model.scan_layers=false" ;;
    t5x-base-chunked) t5x t5x-base-chunked experiments/t5_1_1_base.py \
        "--batch 128 --set train.loss_chunk_size=38" ;;
    t5x-base-none) t5x t5x-base-none experiments/t5_1_1_base.py \
        "--batch 128 --set model.remat_policy=none" ;;
    t5x-base-dots) t5x t5x-base-dots experiments/t5_1_1_base.py \
        "--batch 128 --set model.remat_policy=dots" ;;
    t5x-base-noflags) XLA_FLAGS="" t5x t5x-base-noflags experiments/t5_1_1_base.py "--batch 128" ;;
    t5x-base-packed) t5x t5x-base-packed experiments/t5_1_1_base.py \
        "--batch 128 --set data.pack=true" ;;
    t5x-base-cudnn-packed) t5x t5x-base-cudnn-packed experiments/t5_1_1_base.py \
        "--batch 128 --set data.pack=true --set model.attention_impl=cudnn" ;;
    t5x-base-real) t5x t5x-base-real experiments/t5_1_1_base.py "--batch 128 --steps 50 --data real \
        --set data.pack=true --set data.dataset=python_docs --set data.vocab_train_size=2000" ;;
    base) run_one t5x-base; run_one hf-base; run_one t5x-base-cudnn ;;
    small) run_one t5x-small; run_one hf-small ;;
    large) run_one t5x-large ;;
    xl) run_one t5x-xl ;;
    ablate) run_one t5x-base-noscan; run_one t5x-base-chunked; run_one t5x-base-dots
        run_one t5x-base-none
        run_one t5x-base-noflags ;;
    packing) run_one t5x-base-packed; run_one t5x-base-cudnn-packed ;;
    input) run_one t5x-base-real ;;
    all) run_one base; run_one small; run_one large; run_one xl ;;
  esac
}

summary() {  # FILE... : one table over the records of every file (e.g. several calls')
  "$PY" - "$@" <<'EOF'
import json, sys
records = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
head = f"{'run':<22}{'batch':>6}{'seq/s':>9}{'TFLOP/s':>9}{'MFU':>7}{'compile s':>10}{'peak GiB':>9}  settings / error"
print(head)
print("-" * len(head))
best = {}  # per run, its first success: the largest batch that ran
for r in records:
  if r["run"] == "gpu-tests":
    print(f"{'gpu-tests':<22}{'':>50}  {r.get('error', 'passed (cuDNN attention = reference)')}")
    continue
  if "error" in r:
    print(f"{r['run']:<22}{'':>50}  {r['args']}: {r['error'][:160]}")
    continue
  s = r["settings"]
  mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
  memory = f"{r['peak_memory_bytes'] / 2**30:.1f}" if r["peak_memory_bytes"] else "-"
  detail = (f"{s['dtype']} attn={s['attention_impl']} remat={s.get('remat_policy', '-')} "
            f"scan={s.get('scan_layers', '-')} chunk={s.get('loss_chunk_size', '-')} "
            f"pack={s.get('pack', '-')} "
            f"flags={'default' if s.get('xla_flags') is None else repr(s.get('xla_flags'))[:12]} "
            f"compile={s.get('torch_compile', '-')}")
  if r.get("compiled_memory", {}).get("temp") is not None:
    detail += f" xla-temp={r['compiled_memory']['temp'] / 2**30:.1f}GiB"
  if "input" in r:
    detail += (f" | real data {r['input']['real_step_s']:.4f} s/step vs synthetic "
               f"{r['input']['synthetic_step_s']:.4f}: {100 * r['input']['slowdown']:+.1f}% "
               f"(packing {r['input']['packing_efficiency']:.2f})")
  print(f"{r['run']:<22}{r['batch']:>6}{r['seq_per_s']:>9.1f}{r['tflops_per_s']:>9.1f}{mfu:>7}"
        f"{r['compile_s']:>10.1f}{memory:>9}  {detail}")
  best.setdefault(r["run"], r)
print(f"device: {next((r['device_kind'] for r in records if 'device_kind' in r), 'none ran')}")
targets = [("t5x-base", "seq/s >= 1000", lambda r: r["seq_per_s"] >= 1000),
           ("t5x-base", "compile <= 30 s", lambda r: r["compile_s"] <= 30),
           ("t5x-small", "seq/s >= 3200", lambda r: r["seq_per_s"] >= 3200),
           ("t5x-large", "MFU >= 50%", lambda r: (r["mfu"] or 0) >= 0.50),
           ("t5x-xl", "batch >= 32, MFU >= 45%", lambda r: r["batch"] >= 32 and (r["mfu"] or 0) >= 0.45)]
for run, text, check in targets:
  if run in best:
    print(f"target {run}: {text}: {'met' if check(best[run]) else 'NOT met'}")
if "t5x-base-real" in best:
  slowdown = best["t5x-base-real"]["input"]["slowdown"]
  print(f"target t5x-base-real: real data within 5% of synthetic: {'met' if slowdown <= 0.05 else 'NOT met'}")
# Each ablation against the run it changes one switch of.
baselines = {"t5x-base-noscan": "t5x-base", "t5x-base-chunked": "t5x-base",
             "t5x-base-dots": "t5x-base", "t5x-base-noflags": "t5x-base",
             "t5x-base-packed": "t5x-base", "t5x-base-cudnn-packed": "t5x-base-cudnn",
             "t5x-base-none": "t5x-base"}
for run, baseline in baselines.items():
  if run in best and baseline in best:
    print(f"{run} / {baseline} = {best[run]['seq_per_s'] / best[baseline]['seq_per_s']:.3f}x seq/s, "
          f"compile {best[run]['compile_s']:.0f} s vs {best[baseline]['compile_s']:.0f} s")
for size in ("base", "small"):
  ours = [best[k] for k in (f"t5x-{size}", f"t5x-{size}-cudnn") if k in best]
  if ours and f"hf-{size}" in best:
    top = max(ours, key=lambda r: r["seq_per_s"])
    ratio = top["seq_per_s"] / best[f"hf-{size}"]["seq_per_s"]
    print(f"{size}: best t5x-lite ({top['run']}) / HF peer = {ratio:.2f}x"
          + (" (target >= 2x)" if size == "base" else ""))
EOF
}

if [ "${1:-}" = summary ]; then  # tools/gpu_bench.sh summary CALL1/bench.jsonl CALL2/bench.jsonl ...
  shift
  summary "$@"
  exit
fi
[ $# -eq 0 ] && set -- all
for item in "$@"; do  # a typo must not cost a device call's worth of runs
  case $item in
    t5x-base|t5x-base-cudnn|hf-base|t5x-small|hf-small|t5x-large|t5x-xl|t5x-base-noscan) ;;
    t5x-base-chunked|t5x-base-dots|t5x-base-noflags|t5x-base-real|t5x-base-none) ;;
    t5x-base-packed|t5x-base-cudnn-packed) ;;
    base|small|large|xl|ablate|packing|input|all) ;;
    *) echo "unknown run or group: $item (see the header of $0)" >&2; exit 2 ;;
  esac
done
preflight
for item in "$@"; do
  run_one "$item"
done
summary "$JSONL"
