#!/usr/bin/env bash
# The whole HAWK pipeline on a CPU at the tiny size, on data it makes itself:
#   synthetic videos -> pre-extraction (frames + motion into ArrayRecord) -> a tiny LLM's
#   language pretraining (the frozen LLM HAWK assumes) -> stage 1 (captions)
#   -> stage 2 (anomaly descriptions + QA, from stage 1) -> stage 3 (generation on the test
#   split + BLEU) -> anomaly timelines of long videos + frame-level localization AUC.
#   Rerunning after an interruption resumes where it stopped.
# Usage: launch/local_cpu.sh [WORKDIR]   (default ./workdir)
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  cat <<'EOF'
usage: launch/local_cpu.sh [WORKDIR]

The whole HAWK pipeline on a CPU at the tiny size, on data it makes itself: synthetic videos,
pre-extraction, a tiny LLM's language pretraining, stage 1, stage 2, stage 3 (generation and
BLEU), anomaly timelines of long videos with their frame-level localization AUC, then a
summary. WORKDIR defaults to ./workdir; rerunning resumes where it stopped.
Environment: PYTHON (default python), NUM_VIDEOS (default 300), NUM_LONG_VIDEOS (default 3),
STAGE1_FLAGS and STAGE2_FLAGS (hawk_jax.train flags for stage 1 / 2; defaults
"--config.train.num_steps=1000 --config.train.ckpt_every=500" and the same with 3500 steps;
STAGE2_FLAGS="" runs the config's 80 steps: a 3-minute smoke run whose AUC is at chance).
EOF
  exit 0
fi
if [[ "${1:-}" == -* ]]; then
  echo "error: unknown option $1 (usage: launch/local_cpu.sh [WORKDIR]; --help)" >&2
  exit 2
fi
W="${1:-workdir}"
mkdir -p "$W"
W="$(cd "$W" && pwd)"
export JAX_PLATFORMS=cpu
PY="${PYTHON:-python}"
NUM_VIDEOS="${NUM_VIDEOS:-300}"
# Stage lengths that teach the tiny model the yes/no anomaly question (the timeline's score):
# with 80 clips or 1500 stage-2 steps its localization AUC stayed at chance.
STAGE1_FLAGS="${STAGE1_FLAGS---config.train.num_steps=1000 --config.train.ckpt_every=500}"
STAGE2_FLAGS="${STAGE2_FLAGS---config.train.num_steps=3500 --config.train.ckpt_every=500}"
NUM_LONG_VIDEOS="${NUM_LONG_VIDEOS:-3}"
T0=$(date +%s)

echo "== [1/7] synthetic dataset -> $W/raw"
"$PY" -m data_pipelines.synthetic --out "$W/raw" --num_videos "$NUM_VIDEOS" \
  --num_long_videos "$NUM_LONG_VIDEOS"

echo "== [2/7] pre-extraction (frames + motion -> ArrayRecord) -> $W/data"
"$PY" -m data_pipelines.extract --source captions --annotations "$W/raw/captions.csv" \
  --videos_dir "$W/raw/videos" --out_dir "$W/data/captions" --num_frames 8 --size 64 \
  --motion flow_soft --workers 2
"$PY" -m data_pipelines.extract --source hawk --annotations "$W/raw/all_videos_train.json" \
  --test_annotations "$W/raw/all_videos_test.json" --videos_dir "$W/raw/videos" \
  --out_dir "$W/data/hawk" --num_frames 8 --size 64 --motion flow_soft --workers 2
mkdir -p "$W/pictures"
"$PY" -m data_pipelines.show --data_dir "$W/data/hawk" --split test --index 0 \
  --out "$W/pictures/test_record_0.png"

echo "== [3/7] tiny LLM language pretraining on the corpus text (stands in for LLaMA-2) -> $W/towers"
"$PY" -m hawk_jax.train.pretrain_llm --config configs/stage1_pretrain.py:size=tiny \
  --data_dirs "$W/data/captions,$W/data/hawk" --workdir "$W/towers" --steps 400

echo "== [4/7] stage 1: pretraining on captions -> $W/stage1"
"$PY" -m hawk_jax.train --config configs/stage1_pretrain.py:size=tiny --workdir "$W/stage1" \
  --config.data.dir="$W/data/captions" --config.init.from_stage="$W/towers" ${STAGE1_FLAGS:-}

echo "== [5/7] stage 2: fine-tuning on descriptions + QA -> $W/stage2"
"$PY" -m hawk_jax.train --config configs/stage2_finetune.py:size=tiny --workdir "$W/stage2" \
  --config.data.dir="$W/data/hawk" --config.init.from_stage="$W/stage1" ${STAGE2_FLAGS:-}

echo "== [6/7] stage 3: generation on the test split + BLEU -> $W/stage3"
"$PY" -m hawk_jax.eval --checkpoint "$W/stage2" --data_dir "$W/data/hawk" \
  --out "$W/stage3" --no_judge --brief

echo "== [7/7] anomaly timelines of the long videos + frame-level localization -> $W/timeline"
# Windows of one training clip's length (32 frames at 10 fps), one every quarter of it.
"$PY" -m hawk_jax.timeline --checkpoint "$W/stage2" "$W"/raw/long/videos/*.mp4 \
  --out "$W/timeline" --window_s 3.2 --stride_s 0.8 \
  --annotations "$W/raw/long/annotations_ucf.txt"
"$PY" -m hawk_jax.evaluate --task localization --scores "$W/timeline/timelines.jsonl" \
  --annotations "$W/raw/long/annotations_ucf.txt" --format ucf --out "$W/timeline"

"$PY" -m hawk_jax.train.run_summary "$W" --seconds $(( $(date +%s) - T0 ))
