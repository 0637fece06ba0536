#!/usr/bin/env bash
# Every method on real data with the bundled SmolLM2, one epoch each at its default settings (docs/results.md).
#   SMS spam: train on the train split (or a seeded slice of SMS_TRAIN_ROWS rows), report test accuracy.
#   SST-2: the same seeded slice of SST2_TRAIN_ROWS train rows for each method, scored on the full dev set.
# Usage: [SMS_TRAIN_ROWS=N] [SST2_TRAIN_ROWS=N] examples/baselines.sh [RUNS_DIR] [DATA_DIR]
# With the defaults (all 1,045 SMS rows, 1,600 SST-2 rows) this takes about 3 hours on a 2-core CPU.
set -euo pipefail
RUNS=${1:-runs/baselines}
DATA=${2:-../shared/data}
SMS_METHODS=${SMS_METHODS:-"suffix prefix deep-prefix lora last-blocks head full"}
SST2_METHODS=${SST2_METHODS:-"suffix prefix lora head"}
SMS_TRAIN_ROWS=${SMS_TRAIN_ROWS:-1045}
SST2_TRAIN_ROWS=${SST2_TRAIN_ROWS:-1600}

for method in $SMS_METHODS; do
  out=$RUNS/sms_spam/$method
  [ -f "$out/test_metrics.json" ] && continue  # finished earlier; an interrupted run resumes from its checkpoint
  suffixtune train --model smollm2-135m --task sms_spam --data "$DATA/sms_spam" --method "$method" \
    --max_train_samples "$SMS_TRAIN_ROWS" --output "$out" --disable_tqdm true
  suffixtune eval "$out" --data "$DATA/sms_spam" --split test > "$out/test_metrics.json.tmp"
  mv "$out/test_metrics.json.tmp" "$out/test_metrics.json"
done

for method in $SST2_METHODS; do
  out=$RUNS/sst2/$method
  [ -f "$out/metrics.json" ] && continue
  suffixtune train --model smollm2-135m --task sst2 --data "$DATA/sst2" --method "$method" \
    --max_train_samples "$SST2_TRAIN_ROWS" --output "$out" --disable_tqdm true
done

python "$(dirname "$0")/compare_runs.py" "$RUNS"/sms_spam/* "$RUNS"/sst2/*
