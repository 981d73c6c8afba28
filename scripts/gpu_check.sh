#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no network (Python 3.12 with torch and
# transformers, no TransformerLens): install .wheelhouse/ (`make wheelhouse`, built beforehand
# elsewhere), run the gpu tests on tiny random models, then bench the plain SDPA forward against
# the headlab scan on the random Llama-3-8B-shaped model in bf16 at 8k, 32k and 128k tokens.
# Each step has its own time limit (about 9 minutes in all); logs and a summary go to $OUT
# (7 files). A failed step is reported and the next one still runs; the exit status is that of
# the first failed step.
#
#   scripts/gpu_check.sh         on the GPU machine, from the repository root
#   scripts/gpu_check.sh --dry   here, on CPU: the same steps with the small model and short
#                                lengths (`make gpu-check-dry`); the install goes to a scratch
#                                folder for CPython 3.12, to prove the wheelhouse installs
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/headlab-site.XXXXXX)
DATA=$(mktemp -d /tmp/headlab-bench.XXXXXX)
WHEELS=(.wheelhouse/*.whl)

if [ "$DRY" = 1 ]; then
    PY=${PYTHON:-python3}
    DEVICE=cpu MODEL=random-llama-3-8b-mini LENGTHS="256 512 1024" CHUNK_MB=64
    LIMIT_INSTALL=60 LIMIT_TESTS=300 LIMIT_BENCH="120 120 120"
    # pip may install wheels for another interpreter into a --target folder: CPython 3.12 here
    TARGET_PY=(--python-version 3.12 --implementation cp --only-binary=:all:
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any)
    export PYTHONPATH=$ROOT HEADLAB_GPU_TEST_DEVICE=cpu
else
    PY=${PYTHON:-python3}
    DEVICE=cuda MODEL=random-llama-3-8b LENGTHS="8192 32768 131072" CHUNK_MB=1024
    LIMIT_INSTALL=40 LIMIT_TESTS=120 LIMIT_BENCH="80 110 200"
    TARGET_PY=()
    # The wheels shadow the machine's own versions (transformers, pandas, pytest); the
    # repository itself comes first, so the code under test is this checkout.
    export PYTHONPATH=$ROOT:$SITE
fi
export PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
STATUS=0

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, one summary line.
step() {
    local name=$1 limit=$2 started rc
    shift 2
    started=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    tail -n 30 "$OUT/$name.log"
    local note=""
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && note=" (time limit)"
    echo "$name: exit $rc$note after $(($(date +%s) - started)) s" | tee -a "$SUMMARY"
    [ "$rc" != 0 ] && [ "$STATUS" = 0 ] && STATUS=$rc
    return 0
}

[ -e "${WHEELS[0]}" ] || { echo "no wheels in .wheelhouse/: run 'make wheelhouse' first" | tee -a "$SUMMARY"; exit 2; }

step install "$LIMIT_INSTALL" "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
    --no-cache-dir --ignore-requires-python --upgrade --target "$SITE" "${TARGET_PY[@]}" "${WHEELS[@]}"

step environment 30 "$PY" -c '
import platform, torch, transformers, transformer_lens, pandas, probes
from importlib.metadata import version
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| transformer-lens", version("transformer-lens"),
      "| pandas", pandas.__version__, "| headlab from", probes.__file__)
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), round(torch.cuda.get_device_properties(0).total_memory / 2**30), "GiB")
'

# -W default: warnings are shown, not errors (pyproject's "error"), since this machine's package
# versions are not the pinned ones; -p no:cacheprovider: nothing written into the checkout.
step tests "$LIMIT_TESTS" "$PY" -m pytest tests/gpu -m gpu -q -rs -W default -p no:cacheprovider

read -r -a limits <<<"$LIMIT_BENCH"
i=0
for tokens in $LENGTHS; do
    limit=${limits[$i]}
    i=$((i + 1))
    # Two measurement processes (plain, headlab) share the step's limit.
    step "bench-$tokens" "$limit" "$PY" -m analyses.cli bench --model "$MODEL" --device "$DEVICE" \
        --dtype bfloat16 --tokens "$tokens" --methods plain,headlab --repeats 1 \
        --chunk-mb "$CHUNK_MB" --timeout-s $((limit / 2 - 5)) --data "$DATA" --quiet
done

echo "== summary (also in $SUMMARY)"
cat "$SUMMARY"
rm -rf "$SITE" "$DATA"
exit "$STATUS"
