#!/usr/bin/env bash
# A pod on one machine: N JAX processes on 127.0.0.1, each with K fake CPU devices, their
# collectives over gloo, started with the environment protocol of the cluster scripts
# (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), so that a command run with
# --distributed behaves here exactly as on a TPU slice or a GPU cluster.
#
# Usage: launch/local_pod.sh [--processes N] [--devices_per_process K] [--port P] -- COMMAND...
#   e.g. launch/local_pod.sh --processes 2 --devices_per_process 2 -- \
#          python -m hawk_jax.train --distributed --config configs/stage1_pretrain.py:size=tiny \
#          --workdir /tmp/pod/stage1 --config.data.dir=DATA
#
# Each output line is prefixed with its process index ("[1] ..."); the launcher names each
# process's pid on stderr ("local_pod: process 1 pid 1234"). The exit status is 0 when
# every process succeeded, else that of the first process to fail. When a process dies, JAX's
# coordination service stops the others after HAWK_HEARTBEAT_TIMEOUT_S (default 60 s; see
# hawk_jax/distributed.py) naming the lost process; should any still run GRACE_S (default 180 s)
# after the first failure, this script kills them, so a rehearsal never hangs.
set -uo pipefail

PROCESSES=2
DEVICES=1
PORT=""
GRACE_S="${GRACE_S:-180}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --processes) PROCESSES="$2"; shift 2 ;;
    --devices_per_process) DEVICES="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "error: unknown flag $1 (usage: $0 [--processes N] [--devices_per_process K]" \
            "[--port P] -- COMMAND...)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "error: no command after --" >&2; exit 2; }
[[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]] || { echo "error: --processes $PROCESSES" >&2; exit 2; }
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || { echo "error: --devices_per_process $DEVICES" >&2; exit 2; }
if [[ -z "$PORT" ]]; then  # a free port, chosen by the kernel
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

export JAX_PLATFORMS=cpu
export JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT"
export JAX_NUM_PROCESSES="$PROCESSES"
export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
export PYTHONUNBUFFERED=1  # lines reach the prefixer as they are written
# Fake devices: one flag among any the caller already set.
XLA_FLAGS="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')"
export XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=$DEVICES"

PIDS=()
for ((i = 0; i < PROCESSES; i++)); do
  # setsid: each process (and its Grain workers) in a group of its own, so the kill after the
  # grace period reaches all of them. exec: the process IS the command (signals sent to the
  # pid reach it directly, as on a TPU VM); its output goes through a prefixing sed.
  JAX_PROCESS_ID=$i setsid bash -c 'exec "$@" > >(sed -u "s/^/[$JAX_PROCESS_ID] /") 2>&1' \
    _ "$@" &
  PIDS+=($!)
  echo "local_pod: process $i pid $!" >&2
done

forward() {  # SIGTERM/SIGINT to the launcher reaches every process (preemption rehearsal)
  for p in "${PIDS[@]}"; do kill -s "$1" "$p" 2>/dev/null; done
}
trap 'forward TERM' TERM
trap 'forward INT' INT

STATUS=0
FAILED_AT=""
declare -A DONE=()
while [[ ${#DONE[@]} -lt $PROCESSES ]]; do
  for i in "${!PIDS[@]}"; do
    [[ -n "${DONE[$i]:-}" ]] && continue
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      wait "${PIDS[$i]}"
      rc=$?
      DONE[$i]=$rc
      if [[ $rc -ne 0 ]]; then
        echo "local_pod: process $i exited with status $rc" >&2
        if [[ $STATUS -eq 0 ]]; then STATUS=$rc; FAILED_AT=$(date +%s); fi
      fi
    fi
  done
  if [[ -n "$FAILED_AT" && $(( $(date +%s) - FAILED_AT )) -gt $GRACE_S ]]; then
    for i in "${!PIDS[@]}"; do
      if [[ -z "${DONE[$i]:-}" ]]; then
        echo "local_pod: process $i still running ${GRACE_S}s after a failure; killing it" >&2
        kill -9 -- "-${PIDS[$i]}" 2>/dev/null || kill -9 "${PIDS[$i]}" 2>/dev/null
      fi
    done
  fi
  sleep 0.5
done
exit $STATUS
