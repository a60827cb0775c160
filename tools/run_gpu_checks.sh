#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: the CUDA tests, the reference numerics on the
# device, and the engine benchmark for DPT-Hybrid and DPT-Large at network size 384 in
# fp32/fp16/bf16. Uses whatever python3 has torch with CUDA; results go to ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-out/gpu}
FRAMES=${FRAMES:-40}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
# Every test marked cuda, in whichever file it lives, and the CUDA path's CPU-side logic.
mapfile -t cuda_files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
$PY -m pytest -q -p no:cacheprovider -m cuda "${cuda_files[@]}" 2>&1 | tee "$OUT_DIR/cuda_tests.log"
$PY -m pytest -q -p no:cacheprovider tests/test_engine_cuda_logic.py 2>&1 \
    | tee "$OUT_DIR/cuda_logic_tests.log"
for model in dpt_hybrid dpt_large; do
    for precision in fp32 fp16 bf16; do
        echo "== $model $precision"
        $PY tools/benchmark.py --model "$model" --weights random --device cuda \
            --precision "$precision" --size 640x480 --net-size 384 --frames "$FRAMES" \
            --json "$OUT_DIR/bench_${model}_${precision}.json" 2>&1 | tail -n 30
    done
done
# Every GPU option side by side: eager, CUDA graphs (the default), TensorRT when installed.
for model in dpt_hybrid dpt_large; do
    echo "== $model variants"
    $PY tools/benchmark.py --model "$model" --weights random --device cuda --size 640x480 \
        --net-size 384 --frames "$FRAMES" --systems engine,forward,transformers \
        --variants fp32-eager,fp16-eager,fp32+graphs,fp16+graphs,bf16+graphs,tensorrt-fp16 \
        --json "$OUT_DIR/bench_${model}_variants.json" 2>&1 | tail -n 30
done
