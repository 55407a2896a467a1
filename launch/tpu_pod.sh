#!/usr/bin/env bash
# Train (or evaluate) one HAWK stage on a Cloud TPU slice with gcloud:
#   create the slice (or reuse it), copy or clone the code to every worker, install it with the
#   TPU extra, run the stage on all workers at once (--worker=all, --distributed; stage 3 too:
#   the model and the test items are shared out over the slice), copy the logs back, and delete
#   the slice with --teardown. The MFU is rated against the chip of --accelerator.
#
# Usage:
#   launch/tpu_pod.sh --project P --zone Z --tpu NAME --accelerator v5litepod-64 \
#       --stage 1|2|3 --size hawk7b [--variant paper|released] --workdir gs://BUCKET/RUN \
#       --data gs://BUCKET/DATA [--from_stage gs://BUCKET/PREV] [--batch B] [--steps N] \
#       [--version RUNTIME] [--spot] [--repo URL [--branch B]] [--logs DIR] [--teardown] \
#       [--dry-run] [-- extra args for the stage command, e.g. --config.optim.peak_lr=2e-5]
#   launch/tpu_pod.sh --project P --zone Z --tpu NAME --teardown     # only delete the slice
#
#   --accelerator  TPU type, e.g. v5litepod-64, v5p-128, v4-64, v6e-64 (needed to create)
#   --version      TPU VM runtime (default from the type: v5litepod -> v2-alpha-tpuv5-lite,
#                  v5p -> v2-alpha-tpuv5, v6e -> v2-alpha-tpuv6e, v4 -> tpu-ubuntu2204-base)
#   --repo URL     git clone this (at --branch) on the workers; default: copy this checkout
#   --workdir      checkpoints, metrics and config go here (a gs:// path all workers share)
#   --data         the pre-extracted dataset (python -m data_pipelines.extract ...)
#   --from_stage   stage 1: converted pretrained towers; stage 2: the stage-1 workdir;
#                  stage 3: the stage-2 workdir to evaluate (required)
#   --logs DIR     where each worker's log is copied (default logs/NAME)
#   --teardown     delete the slice at the end (alone: just delete it)
#   --dry-run      print the exact commands instead of running them
#
# Plan the slice first: python -m hawk_jax.plan --config configs/stage2_finetune.py:size=hawk7b \
#   --devices 64 --chip v5e --batch 128
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

PROJECT="" ZONE="" TPU="" ACCELERATOR="" VERSION="" SPOT=0 REPO="" BRANCH="" LOGS=""
TEARDOWN=0 PY=python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --project) PROJECT=$(value_of "$@"); shift 2 ;;
    --zone) ZONE=$(value_of "$@"); shift 2 ;;
    --tpu) TPU=$(value_of "$@"); shift 2 ;;
    --accelerator) ACCELERATOR=$(value_of "$@"); shift 2 ;;
    --version) VERSION=$(value_of "$@"); shift 2 ;;
    --spot) SPOT=1; shift ;;
    --repo) REPO=$(value_of "$@"); shift 2 ;;
    --branch) BRANCH=$(value_of "$@"); shift 2 ;;
    --logs) LOGS=$(value_of "$@"); shift 2 ;;
    --teardown) TEARDOWN=1; shift ;;
    --python) PY=$(value_of "$@"); shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) stage_option "$@" || die "unknown argument '$1' (see --help)"; shift 2 ;;
  esac
done

need "$PROJECT" --project
need "$ZONE" --zone
need "$TPU" --tpu
LOC=(--zone "$ZONE" --project "$PROJECT")

delete_slice() {
  run gcloud compute tpus tpu-vm delete "$TPU" "${LOC[@]}" --quiet
}

if [[ -z "$STAGE" ]]; then
  [[ "$TEARDOWN" == 1 ]] || die "--stage is required (or --teardown alone to delete the slice)"
  delete_slice
  exit 0
fi

stage_config "$STAGE" >/dev/null
check_size "$SIZE"
check_variant "$VARIANT"
need "$ACCELERATOR" --accelerator
need "$WORKDIR" --workdir
need "$DATA" --data
if [[ -z "$VERSION" ]]; then
  case "$ACCELERATOR" in
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v4-*) VERSION=tpu-ubuntu2204-base ;;
    *) die "no default --version for accelerator '$ACCELERATOR'; pass --version" ;;
  esac
fi
LOGS=${LOGS:-logs/$TPU}
CHIP=$(chip_of_accelerator "$ACCELERATOR")
STAGE_CMD=$(stage_command "$PY" 1 "$STAGE" "$SIZE" "$VARIANT" "$WORKDIR" "$DATA" "$FROM_STAGE" \
                          "$BATCH" "$STEPS" "${EXTRA[@]+"${EXTRA[@]}"}")
# Every worker, stage 3 included: a multi-host slice runs a JAX program only when all its
# hosts join (evaluate --distributed splits the items and writes from worker 0).
WORKERS=(--worker=all)
ssh_all() { run gcloud compute tpus tpu-vm ssh "$TPU" "${LOC[@]}" --worker=all --command "$1"; }

# 1. The slice: reuse it when it exists.
CREATE=(gcloud compute tpus tpu-vm create "$TPU" "${LOC[@]}" --accelerator-type "$ACCELERATOR"
        --version "$VERSION")
[[ "$SPOT" == 1 ]] && CREATE+=(--spot)
if [[ "$DRY_RUN" == 1 ]]; then
  echo "$(quote gcloud compute tpus tpu-vm describe "$TPU" "${LOC[@]}") >/dev/null 2>&1 || $(quote "${CREATE[@]}")"
elif gcloud compute tpus tpu-vm describe "$TPU" "${LOC[@]}" >/dev/null 2>&1; then
  echo "reusing TPU $TPU" >&2
else
  "${CREATE[@]}"
fi

# 2. The code on every worker.
if [[ -n "$REPO" ]]; then
  CLONE=(git clone --depth 1)
  [[ -n "$BRANCH" ]] && CLONE+=(--branch "$BRANCH")
  ssh_all "rm -rf ~/hawk-jax && $(quote "${CLONE[@]}" "$REPO") ~/hawk-jax"
else
  TARBALL=/tmp/hawk-jax-src.tgz
  run tar -czf "$TARBALL" -C "$REPO_ROOT" --exclude=.git --exclude='./workdir*' --exclude=./runs --exclude=./data \
      --exclude=./logs --exclude=__pycache__ .
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU:~/hawk-jax-src.tgz" "${LOC[@]}" --worker=all
  ssh_all "rm -rf ~/hawk-jax && mkdir -p ~/hawk-jax && tar -xzf ~/hawk-jax-src.tgz -C ~/hawk-jax"
fi

# 3. Install with the TPU extra (jax[tpu]: libtpu).
ssh_all "cd ~/hawk-jax && $PY -m pip install -q -e \".[tpu]\""

# 4. Run the stage; each worker logs to ~/hawk-logs/stage<N>-<hostname>.log. A failed run
#    still brings its logs back (and is torn down with --teardown) before this script fails.
STATUS=0
run gcloud compute tpus tpu-vm ssh "$TPU" "${LOC[@]}" "${WORKERS[@]}" --command \
    "set -o pipefail; mkdir -p ~/hawk-logs && cd ~/hawk-jax && $STAGE_CMD 2>&1 | tee ~/hawk-logs/stage$STAGE-\$(hostname).log" \
  || STATUS=$?

# 5. The logs.
run mkdir -p "$LOGS"
run gcloud compute tpus tpu-vm scp --recurse "$TPU:~/hawk-logs" "$LOGS" "${LOC[@]}" "${WORKERS[@]}" \
  || echo "warning: could not copy the logs back" >&2

# 6. Tear down.
if [[ "$TEARDOWN" == 1 ]]; then
  delete_slice
fi
[[ "$STATUS" == 0 ]] || echo "error: stage $STAGE failed on $TPU (exit $STATUS); logs in $LOGS" >&2
exit "$STATUS"
