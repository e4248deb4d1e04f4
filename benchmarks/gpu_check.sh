#!/usr/bin/env bash
# One GPU session's checks, as run on a lent H200 (docs/measurements.md, "On a GPU"): the planted equalities
# on CUDA (tests/test_cuda.py) beside the CPU ones, then the KV channel and the injection engine timed there.
# Needs a finished default run's models and KV map under results/ (make run with kv.enabled), and, where the
# machine lacks the locked transformers, its wheels in .whl/ (installed to /tmp/site, nothing else touched).
set -o pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kv_channel.py tests/test_bounded_scoring.py \
  tests/test_interventions.py 2>&1 | tee "$OUT/pytest.log" | tail -15
for dtype in float32 bfloat16; do
  python3 benchmarks/kv_channel.py --device cuda --dtype $dtype --rows 1000 --batch-tokens 65536 2>&1 \
    | grep -v "Loading weights" | tee "$OUT/kv_channel_$dtype.log"
done
python3 benchmarks/injection.py --device cuda --shapes 160m 410m --conditions 12 48 --examples 16 2>&1 \
  | tee "$OUT/injection.log"
