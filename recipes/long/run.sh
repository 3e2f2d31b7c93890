#!/usr/bin/env bash
# The long recipe, end to end: capture the teacher on recipes/long's prompts, distill, evaluate.
#
#   bash recipes/long/run.sh [RUN]        (default RUN: runs/long)
#
# Resumable: run the same command again after Ctrl-C, a crash or a reboot. The stores keep
# what was generated (only the missing prompts run), the student continues from its last
# checkpoint, and the evaluation is cheap enough to run again. About 2 hours on 2 CPU cores
# (capture ~15 min, distill ~70-90 min, eval ~5 min); minutes on one GPU.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RUN="${1:-runs/long}"
RETORT="${RETORT:-retort}"
TEACHER=smollm2-135m-instruct
mkdir -p "$RUN"
for split in train heldout; do
  # the quickstart's capture settings: greedy, 48 new tokens, top-20 logprobs
  "$RETORT" generate --teacher "$TEACHER" --prompts "$HERE/prompts-$split.jsonl" \
    --out "$RUN/store-$split" --max-new-tokens 48 --batch-size 16
done
"$RETORT" distill --config "$HERE/distill.yaml" --data "$RUN/store-train" \
  --eval-data "$RUN/store-heldout" --out "$RUN/student" --resume
"$RETORT" eval --teacher "$TEACHER" --data "$RUN/store-heldout" --student "$RUN/student" \
  --out "$RUN/eval" --answer-tokens 24 --speed-tokens 32
"$RETORT" report "$RUN/student" --eval "$RUN/eval" --out "$RUN/report.html" --title "retort: the long recipe"
