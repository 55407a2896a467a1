# Shared by launch/tpu_pod.sh, launch/xpk.sh and launch/gpu.sh (sourced, not run).
#
# DRY_RUN=1 makes `run` print each command, shell-quoted and runnable, instead of running it.
# stage_command builds the one command every process runs for a stage:
#   stage 1, 2: python3 -m hawk_jax.train [--distributed] --config configs/stage{1,2}_*.py:size=..,variant=..
#               --workdir W --config.data.dir=D [--config.init.from_stage=F] [overrides] [extra]
#               [--config.train.chip=$CHIP when set: the MFU's chip, from the accelerator type]
#   stage 3:    python3 -m hawk_jax.eval [--distributed] --checkpoint F --data_dir D --out W [extra]
#               (distributed: every host holds a share of the model and of the test items)

DRY_RUN=${DRY_RUN:-0}
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "error: $*" >&2
  exit 2
}

# The arguments as one line that bash reads back unchanged: plain words as they are, others
# in single quotes.
quote() {
  local out=() a sq="'" esc="'\\''"
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//$sq/$esc}'")
    fi
  done
  echo "${out[*]}"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote "$@"
  else
    "$@"
  fi
}

# need VALUE FLAG: a clear error when a required flag is missing.
need() {
  [[ -n "$1" ]] || die "$2 is required (see --help)"
}

# The value after a flag, or an error naming the flag.
value_of() {
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value"
  echo "$2"
}

# stage_option FLAG [VALUE]: the stage flags every script takes (--stage --size --variant
# --workdir --data --from_stage --batch --steps); sets the variable and returns 0, or returns
# 1 for a flag that is not one of them. Call as `stage_option "$@" && shift 2`.
stage_option() {
  case "$1" in
    --stage) STAGE=$(value_of "$@") || exit 2 ;;
    --size) SIZE=$(value_of "$@") || exit 2 ;;
    --variant) VARIANT=$(value_of "$@") || exit 2 ;;
    --workdir) WORKDIR=$(value_of "$@") || exit 2 ;;
    --data) DATA=$(value_of "$@") || exit 2 ;;
    --from_stage) FROM_STAGE=$(value_of "$@") || exit 2 ;;
    --batch) BATCH=$(value_of "$@") || exit 2 ;;
    --steps) STEPS=$(value_of "$@") || exit 2 ;;
    *) return 1 ;;
  esac
}

stage_config() {
  case "$1" in
    1) echo configs/stage1_pretrain.py ;;
    2) echo configs/stage2_finetune.py ;;
    3) echo configs/stage3_test.py ;;
    *) die "--stage must be 1, 2 or 3 (got '$1')" ;;
  esac
}

check_size() {
  case "$1" in
    tiny|small|hawk7b|hawk13b) ;;
    *) die "--size must be tiny, small, hawk7b or hawk13b (got '$1')" ;;
  esac
}

check_variant() {
  case "$1" in
    paper|released) ;;
    *) die "--variant must be paper or released (got '$1')" ;;
  esac
}

# stage_command PYTHON DISTRIBUTED(0/1) STAGE SIZE VARIANT WORKDIR DATA FROM_STAGE BATCH STEPS
#   [EXTRA...] -> the quoted command on stdout.
stage_command() {
  local py="$1" dist="$2" stage="$3" size="$4" variant="$5" workdir="$6" data="$7" from="$8"
  local batch="$9" steps="${10}"
  shift 10
  local cmd
  if [[ "$stage" == 3 ]]; then
    need "$from" "--from_stage (the stage-2 workdir to evaluate)"
    cmd=("$py" -m hawk_jax.eval)
    [[ "$dist" == 1 ]] && cmd+=(--distributed)
    cmd+=(--checkpoint "$from" --data_dir "$data" --out "$workdir")
    [[ -n "$batch" ]] && cmd+=(--batch_size "$batch")
  else
    cmd=("$py" -m hawk_jax.train)
    [[ "$dist" == 1 ]] && cmd+=(--distributed)
    cmd+=(--config "$(stage_config "$stage"):size=$size,variant=$variant" --workdir "$workdir"
          "--config.data.dir=$data")
    [[ -n "$from" ]] && cmd+=("--config.init.from_stage=$from")
    [[ -n "$batch" ]] && cmd+=("--config.train.batch_size=$batch")
    [[ -n "$steps" ]] && cmd+=("--config.train.num_steps=$steps")
    [[ -n "${CHIP:-}" ]] && cmd+=("--config.train.chip=$CHIP")
  fi
  quote "${cmd[@]}" "$@"
}

# chip_of_accelerator TYPE -> the hawk_jax/hardware.py chip of a TPU type (v5litepod-64 -> v5e),
# empty when unknown (train.chip "auto" then reads it from the devices).
chip_of_accelerator() {
  case "$1" in
    v5litepod-*|v5e-*|v5litepod|v5e) echo v5e ;;
    v5p-*|v5p) echo v5p ;;
    v6e-*|v6e) echo v6e ;;
    v4-*|v4) echo v4 ;;
    *) echo "" ;;
  esac
}

# The stage flags every script takes (--stage --size --variant --workdir --data --from_stage
# --batch --steps, and extra arguments after --).
STAGE="" SIZE="hawk7b" VARIANT="paper" WORKDIR="" DATA="" FROM_STAGE="" BATCH="" STEPS=""
EXTRA=()
