#!/usr/bin/env bash
# Train (or evaluate) one HAWK stage on GPU nodes: one process per node, each driving all of its
# GPUs, joined by jax.distributed.initialize() (--distributed).
#   --launcher srun  one SLURM step over --nodes nodes; JAX reads SLURM's variables
#                    (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID)
#   --launcher ssh   one ssh per host of --hosts, each with JAX_COORDINATOR_ADDRESS (the first
#                    host), JAX_NUM_PROCESSES and JAX_PROCESS_ID; the code must already be at
#                    --repo_dir on every host (shared filesystem or a copy)
#   --launcher local this machine only (one process, no --distributed)
# Stage 3 (evaluation) runs as one process on the first node.
#
# Usage:
#   launch/gpu.sh --launcher srun --nodes 2 [--gpus_per_node 8] [--partition P] [--account A] \
#       [--time 24:00:00] --stage 1|2|3 --size hawk7b [--variant paper|released] \
#       --workdir /shared/runs/stage2 --data /shared/data/hawk [--from_stage DIR] \
#       [--batch B] [--steps N] [--dry-run] [-- extra args for the stage command]
#   launch/gpu.sh --launcher ssh --hosts gpu-a,gpu-b [--port 8476] [--logs DIR] ...
#
#   --repo_dir   where this checkout is on the nodes (default: here, $PWD-independent)
#   --python     interpreter on the nodes (default python3)
#   --logs DIR   ssh launcher: one log per host (default logs/gpu)
#   --dry-run    print the exact commands instead of running them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

LAUNCHER="" NODES="" GPUS=8 PARTITION="" ACCOUNT="" TIME="" HOSTS="" PORT=8476 LOGS=logs/gpu
REPO_DIR="$REPO_ROOT" PY=python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --launcher) LAUNCHER=$(value_of "$@"); shift 2 ;;
    --nodes) NODES=$(value_of "$@"); shift 2 ;;
    --gpus_per_node) GPUS=$(value_of "$@"); shift 2 ;;
    --partition) PARTITION=$(value_of "$@"); shift 2 ;;
    --account) ACCOUNT=$(value_of "$@"); shift 2 ;;
    --time) TIME=$(value_of "$@"); shift 2 ;;
    --hosts) HOSTS=$(value_of "$@"); shift 2 ;;
    --port) PORT=$(value_of "$@"); shift 2 ;;
    --logs) LOGS=$(value_of "$@"); shift 2 ;;
    --repo_dir) REPO_DIR=$(value_of "$@"); shift 2 ;;
    --python) PY=$(value_of "$@"); shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) stage_option "$@" || die "unknown argument '$1' (see --help)"; shift 2 ;;
  esac
done

need "$LAUNCHER" "--launcher (srun, ssh or local)"
need "$STAGE" --stage
stage_config "$STAGE" >/dev/null
check_size "$SIZE"
check_variant "$VARIANT"
need "$WORKDIR" --workdir
need "$DATA" --data
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer"

# command_for DISTRIBUTED [VAR=VALUE...] -> the stage command, run from the checkout with
# those environment variables.
command_for() {
  local dist="$1" cmd
  shift
  cmd=$(stage_command "$PY" "$dist" "$STAGE" "$SIZE" "$VARIANT" "$WORKDIR" "$DATA" \
                      "$FROM_STAGE" "$BATCH" "$STEPS" "${EXTRA[@]+"${EXTRA[@]}"}")
  if [[ $# -gt 0 ]]; then
    cmd="$(quote "$@") $cmd"
  fi
  echo "cd $(quote "$REPO_DIR") && $cmd"
}

case "$LAUNCHER" in
  srun)
    need "$NODES" --nodes
    [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer"
    if [[ "$STAGE" == 3 ]]; then
      NODES=1
      CMD=$(command_for 0)
    else
      CMD=$(command_for 1)
    fi
    SRUN=(srun "--nodes=$NODES" --ntasks-per-node=1 "--gpus-per-node=$GPUS")
    [[ -n "$PARTITION" ]] && SRUN+=("--partition=$PARTITION")
    [[ -n "$ACCOUNT" ]] && SRUN+=("--account=$ACCOUNT")
    [[ -n "$TIME" ]] && SRUN+=("--time=$TIME")
    run "${SRUN[@]}" bash -c "$CMD"
    ;;
  ssh)
    need "$HOSTS" --hosts
    IFS=, read -r -a HOST_LIST <<< "$HOSTS"
    [[ "$STAGE" == 3 ]] && HOST_LIST=("${HOST_LIST[0]}")
    N=${#HOST_LIST[@]}
    COORD="${HOST_LIST[0]}:$PORT"
    run mkdir -p "$LOGS"
    PIDS=()
    for i in "${!HOST_LIST[@]}"; do
      host=${HOST_LIST[$i]}
      if [[ "$STAGE" == 3 ]]; then
        CMD=$(command_for 0)
      else
        CMD=$(command_for 1 "JAX_COORDINATOR_ADDRESS=$COORD" "JAX_NUM_PROCESSES=$N" \
                          "JAX_PROCESS_ID=$i")
      fi
      if [[ "$DRY_RUN" == 1 ]]; then
        echo "$(quote ssh "$host" "$CMD") > $(quote "$LOGS/$host.log") 2>&1 &"
      else
        ssh "$host" "$CMD" > "$LOGS/$host.log" 2>&1 &
        PIDS+=($!)
      fi
    done
    if [[ "$DRY_RUN" == 1 ]]; then
      echo wait
    else
      STATUS=0
      for i in "${!PIDS[@]}"; do
        wait "${PIDS[$i]}" || { STATUS=1; echo "error: ${HOST_LIST[$i]} failed; see $LOGS/${HOST_LIST[$i]}.log" >&2; }
      done
      exit "$STATUS"
    fi
    ;;
  local)
    run bash -c "$(command_for 0)"
    ;;
  *) die "--launcher must be srun, ssh or local (got '$LAUNCHER')" ;;
esac
