#!/usr/bin/env bash
# The GPU checks of the kernels issue in one run, on a lent CUDA machine (H100/H200; no network):
#   1. the CUDA tests (they skip on a machine without a GPU; here they run), the Triton and BLAKE3
#      kernel tests compiled instead of interpreted, and the lottery vectors on CUDA;
#   2. `pouw-bench --device cuda --quick matmul training` (noisy product vs plain int8 _int_mm,
#      mined vs plain step), JSON and plots under $OUT/bench;
#   3. `pouw-mine --gpu 0` end to end against a regtest node on loopback for MINE_SECONDS (90 s):
#      the blocks it submits must be accepted by the node's CPU verification.
# Everything lands under $OUT (the device tool's folder; /tmp/pouw-device elsewhere): commit what
# matters under benchmarks/results/cuda/ with the device named. Wheels the image lacks come from
# .whl/ (benchmarks/device/fetch_wheels.sh, carried with the run). Exits non-zero if a step fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/pouw-device}
PY=${PYTHON:-python3}
MINE_SECONDS=${MINE_SECONDS:-90}
STEPS=${STEPS:-"1 2 3"}            # which of the three checks to run
MINER_DEVICE=${MINER_DEVICE:-"--gpu 0"}  # "--cpu" for a dry run of check 3 on a machine without a GPU
mkdir -p "$OUT" /tmp/site
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
status=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/device.txt"

run() { [[ " $STEPS " == *" $1 "* ]]; }
if run 1; then
echo "== 1. CUDA and kernel tests"
$PY -m pytest -q -p no:cacheprovider -o addopts="" --timeout 900 \
    tests/pouw_kernels tests/pouw_lottery/test_vectors.py tests/pouw_train/test_backends.py \
    tests/pouw_train/test_engine.py 2>&1 | tee "$OUT/tests.log" | tail -15 || status=1
fi

if run 2; then
echo "== 2. benchmarks on cuda"
$PY -m benchmarks.cli matmul training --device cuda --quick --no-progress --out "$OUT/bench" \
    2>&1 | tee "$OUT/bench.log" | tail -30 || status=1
fi

if run 3; then
echo "== 3. pouw-mine $MINER_DEVICE against a regtest node (${MINE_SECONDS} s)"
DATA=$(mktemp -d)
$PY -m node.cli --preset regtest --datadir "$DATA/node" --rpc-port 0 --p2p-port 0 >"$OUT/node.log" 2>&1 &
NODE=$!
for _ in $(seq 60); do grep -q "listening: RPC" "$OUT/node.log" && break; sleep 1; done
URL=$(grep -o "RPC http://[0-9.:]*" "$OUT/node.log" | head -1 | cut -d' ' -f2)
ADDRESS=$($PY -c "import hashlib; from wallet.address import encode_address; from wallet.keys import PrivateKey; print(encode_address(PrivateKey(hashlib.sha256(b'device-check').digest()).address))")
timeout -s INT "$MINE_SECONDS" $PY -m node.miner_cli $MINER_DEVICE --node "$URL" --datadir "$DATA/node" \
    --address "$ADDRESS" >"$OUT/miner.log" 2>&1
$PY - "$URL" "$DATA/node" <<'PYEOF' | tee "$OUT/mined.txt" || status=1
import json, pathlib, sys, urllib.request
url, datadir = sys.argv[1], pathlib.Path(sys.argv[2])
cookie = (datadir / ".cookie").read_text().strip()
request = urllib.request.Request(url + "/metrics", headers={"Authorization": "Basic " + __import__("base64").b64encode(cookie.encode()).decode()})
text = urllib.request.urlopen(request, timeout=10).read().decode()
lines = [l for l in text.splitlines() if l.startswith("pouw_mining_submissions_total")]
print("\n".join(lines))
accepted = sum(float(l.rsplit(" ", 1)[1]) for l in lines if 'outcome="accepted"' in l)
rejected = sum(float(l.rsplit(" ", 1)[1]) for l in lines if 'outcome="rejected"' in l)
print(json.dumps({"accepted": accepted, "rejected": rejected}))
sys.exit(0 if accepted >= 1 and rejected == 0 else 1)
PYEOF
kill -INT "$NODE" 2>/dev/null; wait "$NODE" 2>/dev/null
tail -3 "$OUT/miner.log"
fi
exit $status
