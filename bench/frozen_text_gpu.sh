#!/usr/bin/env bash
# GPU measurements for docs/benchmarks.md "Frozen-text training": bench/frozen_text_gpu.sh MODEL [--multitask]
# (gpt2-large with --multitask takes about 7 minutes on an H200, gpt2-xl alone about 5). Needs
# .bench-assets/gpt2-tokenizer and .bench-assets/sst2-train.tsv (copies of ../shared); logs go to ${OUT:-runs/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
model=$1 out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH=src:bench PYTHONUNBUFFERED=1
assets=(--random-init --tokenizer .bench-assets/gpt2-tokenizer --data .bench-assets/sst2-train.tsv)
quiet() { grep -v -i -e warn -e "inputs_embeds" | tee -a "$1"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/gpu.txt"
python -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" | tee -a "$out/gpu.txt"
timeout 150 python bench/train_throughput.py --model "$model" "${assets[@]}" --batch-size 32 --steps 20 --repeats 2 \
  --methods peft-prompt-tuning,suffix-full-pass,suffix,suffix-cached,head,head-cached 2>&1 | quiet "$out/throughput-64.txt"
timeout 240 python bench/train_throughput.py --model "$model" "${assets[@]}" --batch-size 32 --steps 10 --repeats 2 \
  --synthetic-length 256 --methods peft-prompt-tuning,suffix-full-pass,suffix,suffix-cached --max-batch \
  2>&1 | quiet "$out/throughput-256.txt"
if [ "${2:-}" = --multitask ]; then
  timeout 60 python bench/multitask_training.py --model "$model" "${assets[@]}" --batch-size 32 --steps 10 --repeats 2 \
    --tasks 2 4 2>&1 | quiet "$out/multitask-training.txt"
  timeout 75 python bench/multitask.py --model "$model" --random-init --tokenizer .bench-assets/gpt2-tokenizer \
    --device cuda --dtype bfloat16 --batch-size 32 --lengths 128 512 --tasks 1 4 16 --repeats 5 \
    --approaches shared,shared-cached,separate 2>&1 | quiet "$out/multitask-inference.txt"
fi
