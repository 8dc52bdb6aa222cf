#!/usr/bin/env bash
# The pilot of docs/pilot.md: SmolLM2-135M-Instruct on builtin:arithmetic, 3 arms x 3 seeds,
# 30 GRPO steps each, on 2 CPU cores (about an hour). A rerun resumes; OUT defaults to pilot-arith.
set -euo pipefail
OUT=${1:-pilot-arith}
.venv/bin/anglecurate pilot --model builtin:smollm2 --data builtin:arithmetic --id-field uid \
    --field problem --answer-field answer --out "$OUT" \
    --arms uniform,gainrl,length --seeds 3 --steps 30 --eval-every 5 \
    --eval-rows 150 --train-rows 1200 --reward number \
    --num-generations 8 --prompts-per-step 4 --max-completion-length 16 --learning-rate 2e-5
