#!/bin/bash
# The checks no CPU can make, on a machine with a CUDA GPU; run from the repository root:
#
#     benchmarks/gpu_check.sh OUT_DIR [SECONDS_FOR_THE_FULL_TEST_SUITE]
#
# Each step writes OUT_DIR/<step>.log and appends "<step> rc=<exit status> <seconds> s" to OUT_DIR/summary.txt:
#   cuda_tests   the tests that skip without CUDA (augmentation draws on the GPU; an experiment with train.device
#                "cuda", bf16 autocast, loader workers and pinned memory)
#   train_step   benchmarks/train_step.py on the GPU at the paper's input (batch 64, 1000 x 64), fp32 and bf16
#   nccl_run     configs/synth-2-2-1-26-cnn.toml under torchrun (NCCL: one process per GPU the machine has),
#                bf16, train.batch_size 64 per GPU as in the paper; its report.md and results.json are copied to OUT_DIR
#   full_tests   the whole test suite on this machine (12 pytest-xdist workers of 2 threads when xdist is installed),
#                within the seconds given (default 300; 16 cores ran it in 148 s)
# The package itself is read from src/ (PYTHONPATH), so the machine's own torch is used: say which in the note.
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [SECONDS_FOR_THE_FULL_TEST_SUITE]}
full_tests_s=${2:-300}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
gpus=$($py -c "import torch; print(torch.cuda.device_count())")

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$(date +%s%N)
    shift 2
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$? ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "$name rc=$rc $((ms / 1000)).$(printf %03d $((ms % 1000))) s" | tee -a "$out/summary.txt"
}

{ nvidia-smi; $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"; } > "$out/machine.txt" 2>&1
echo "gpus=$gpus" | tee -a "$out/summary.txt"
step cuda_tests 180 $py -m pytest -q -p no:cacheprovider \
    tests/test_augment.py::test_same_draws_on_cuda tests/test_distributed.py::test_cuda_smoke
step train_step 180 $py benchmarks/train_step.py --device cuda --precision fp32 bf16 --steps 20
run=$(mktemp -d)/run
step nccl_run 420 torchrun --standalone --nproc_per_node "$gpus" -m thce experiment configs/synth-2-2-1-26-cnn.toml \
    --out "$run" --set 'train.device="cuda"' --set 'train.precision="bf16"' --set train.batch_size=64
cp "$run/report.md" "$out/nccl_run_report.md" 2>/dev/null
cp "$run/results.json" "$out/nccl_run_results.json" 2>/dev/null
xdist=$($py -c "import xdist" 2>/dev/null && echo "-n 12")
OMP_NUM_THREADS=2 step full_tests "$full_tests_s" $py -m pytest -q -p no:cacheprovider -p no:benchmark $xdist tests
