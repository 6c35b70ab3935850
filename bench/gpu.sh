#!/usr/bin/env bash
# GPU readiness benchmark (issue 9), one prepared script for a lent GPU machine.
#
# Runs tests/training/test_cuda.py, then measures on one GPU: data.augment against the plain kornia
# pipeline and its share of a training step; then images/s per trial, images/s of all
# workers and GPU utilisation (nvidia-smi, sampled in the background) for 1, 2 and 4
# run_study.py workers, each for a fixed time budget, on 1,400 synthetic erasers at 310 px
# made on the machine. Mixed precision, cuDNN autotuning, channels-last and GPU-resident
# uint8 data are what search/train.py does on CUDA. Finishes in about 6 minutes (each stage
# has a timeout); writes $OUT/gpu_results.md when $OUT is set (after each worker count, so a
# timeout keeps what was measured). Extra arguments go to `python -m bench.gpu_workers` (see
# its --help), e.g. `bench/gpu.sh --workers 1 2`.
#
# The machine needs PyTorch with CUDA; what it lacks (kornia, optuna, optuna-dashboard and
# their pure-Python needs) travels as wheels in .whl/ at the repository root, installed here
# into /tmp/site. Fetch them once where pip can reach PyPI, from the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0 optuna==5.0.0 \
#     sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 bottle==0.13.4 \
#     optuna-dashboard==0.21.0 cleanlab==2.9.0 termcolor==3.3.0
# (cleanlab and termcolor are for bench/gpu_label_noise.sh, which uses the same wheels.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing the carried wheels into /tmp/site"
  timeout 240 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== preflight"
timeout 180 "$PY" - <<'EOF'
import importlib
import sys

missing = []
for name in ("torch", "numpy", "scipy", "PIL", "sklearn", "matplotlib", "tqdm", "kornia",
             "optuna", "sqlalchemy", "alembic", "mako", "colorlog", "optuna_dashboard"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # any import failure is reported, not raised
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    print("cannot run: these Python packages are missing or broken (carry them as wheels in "
          ".whl/, see the top of bench/gpu.sh):", *missing, sep="\n  ")
    sys.exit(3)
import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    print("cannot run: PyTorch sees no CUDA GPU here")
    sys.exit(4)
print(f"GPU {torch.cuda.get_device_name(0)}")
try:
    import run_study  # noqa: F401  (the project itself imports)
except ImportError as exc:
    print(f"cannot run: the project does not import here ({exc}); carry that package too")
    sys.exit(3)
EOF
timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu \
  --format=csv || echo "(nvidia-smi unavailable: GPU utilisation will read n/a)"

echo "== CUDA tests (the training path on the GPU)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/training/test_cuda.py \
  || echo "(the CUDA tests failed or timed out, see above; benchmarking anyway)"

echo "== benchmark"
# SIGINT first: the script stops its study (and that study's workers) and keeps its results.
timeout --signal=INT --kill-after=45 400 "$PY" -m bench.gpu_workers \
  --work /tmp/eraser-gpu-bench --budget 45 --grace 75 ${OUT:+--out "$OUT"} "$@"
