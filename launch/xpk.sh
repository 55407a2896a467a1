#!/usr/bin/env bash
# Train (or evaluate) one HAWK stage on TPUs in a GKE cluster with XPK
# (https://github.com/AI-Hypercomputer/xpk): `xpk workload create` runs the stage command in a
# container on every host of --num_slices slices of --tpu_type; JAX finds its peers itself
# (--distributed).
#
# Usage:
#   launch/xpk.sh --cluster C --project P --zone Z --tpu_type v5litepod-64 [--num_slices 1] \
#       --stage 1|2|3 --size hawk7b [--variant paper|released] --workdir gs://BUCKET/RUN \
#       --data gs://BUCKET/DATA [--from_stage gs://BUCKET/PREV] [--batch B] [--steps N] \
#       [--workload NAME] [--build_image IMAGE | --docker_image IMAGE | --base_docker_image IMAGE] \
#       [--dry-run] [-- extra args for the stage command]
#   launch/xpk.sh --cluster C --project P --zone Z --workload NAME --delete
#
#   --build_image        build the repository's Dockerfile (this checkout with the TPU extra
#                        installed) as IMAGE, e.g. gcr.io/PROJECT/hawk-jax:TAG, push it
#                        (docker build && docker push; docker must be logged in to the
#                        registry), then run it as --docker_image: no install at start
#   --docker_image       an image that already holds this code and its dependencies (run as is)
#   --base_docker_image  default python:3.11: XPK layers this checkout onto it (--script-dir)
#                        and the command installs it with the TPU extra first, on every host
#                        at every start (the default when no image is given)
#   --workload           default hawk-s<STAGE>-<SIZE>-<time>
#   --delete             delete the workload instead of creating one
#   --dry-run            print the exact commands instead of running them
# Multi-slice runs (--num_slices > 1) cross the data-centre network on whichever mesh axis
# spans the slices; keep --num_slices 1 unless the plan says the data axis can take it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

CLUSTER="" PROJECT="" ZONE="" TPU_TYPE="" NUM_SLICES=1 WORKLOAD="" DOCKER_IMAGE=""
BASE_IMAGE="" BUILD_IMAGE="" DELETE=0 PY=python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --cluster) CLUSTER=$(value_of "$@"); shift 2 ;;
    --project) PROJECT=$(value_of "$@"); shift 2 ;;
    --zone) ZONE=$(value_of "$@"); shift 2 ;;
    --tpu_type) TPU_TYPE=$(value_of "$@"); shift 2 ;;
    --num_slices) NUM_SLICES=$(value_of "$@"); shift 2 ;;
    --workload) WORKLOAD=$(value_of "$@"); shift 2 ;;
    --docker_image) DOCKER_IMAGE=$(value_of "$@"); shift 2 ;;
    --base_docker_image) BASE_IMAGE=$(value_of "$@"); shift 2 ;;
    --build_image) BUILD_IMAGE=$(value_of "$@"); shift 2 ;;
    --delete) DELETE=1; shift ;;
    --python) PY=$(value_of "$@"); shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) stage_option "$@" || die "unknown argument '$1' (see --help)"; shift 2 ;;
  esac
done

need "$CLUSTER" --cluster
need "$PROJECT" --project
need "$ZONE" --zone
LOC=(--cluster "$CLUSTER" --project "$PROJECT" --zone "$ZONE")

if [[ "$DELETE" == 1 ]]; then
  need "$WORKLOAD" --workload
  run xpk workload delete --workload "$WORKLOAD" "${LOC[@]}"
  exit 0
fi

need "$STAGE" --stage
stage_config "$STAGE" >/dev/null
check_size "$SIZE"
check_variant "$VARIANT"
need "$TPU_TYPE" --tpu_type
need "$WORKDIR" --workdir
need "$DATA" --data
[[ "$NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num_slices must be a positive integer"
IMAGES=0
for image in "$DOCKER_IMAGE" "$BASE_IMAGE" "$BUILD_IMAGE"; do
  if [[ -n "$image" ]]; then IMAGES=$((IMAGES + 1)); fi
done
[[ "$IMAGES" -le 1 ]] || die "give one of --build_image, --docker_image, --base_docker_image"
WORKLOAD=${WORKLOAD:-hawk-s$STAGE-$SIZE-$(date +%m%d-%H%M)}

DIST=1  # every stage, evaluation included: all hosts of the slice join one program
CHIP=$(chip_of_accelerator "$TPU_TYPE")
STAGE_CMD=$(stage_command "$PY" "$DIST" "$STAGE" "$SIZE" "$VARIANT" "$WORKDIR" "$DATA" \
                          "$FROM_STAGE" "$BATCH" "$STEPS" "${EXTRA[@]+"${EXTRA[@]}"}")
CREATE=(xpk workload create "${LOC[@]}" --workload "$WORKLOAD" --tpu-type "$TPU_TYPE"
        --num-slices "$NUM_SLICES")
if [[ -n "$BUILD_IMAGE" ]]; then
  # TPU hosts are x86-64: build for it whatever machine builds the image.
  run docker build --platform linux/amd64 -t "$BUILD_IMAGE" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT"
  run docker push "$BUILD_IMAGE"
  DOCKER_IMAGE=$BUILD_IMAGE
fi
if [[ -n "$DOCKER_IMAGE" ]]; then
  CREATE+=(--docker-image "$DOCKER_IMAGE" --command "$STAGE_CMD")
else
  CREATE+=(--base-docker-image "${BASE_IMAGE:-python:3.11}" --script-dir "$REPO_ROOT"
           --command "$PY -m pip install -q -e \".[tpu]\" && $STAGE_CMD")
fi
run "${CREATE[@]}"
if [[ "$DRY_RUN" != 1 ]]; then
  echo "submitted $WORKLOAD; follow it with: $(quote xpk workload list "${LOC[@]}")" >&2
fi
