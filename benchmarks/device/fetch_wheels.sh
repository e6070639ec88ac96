#!/usr/bin/env bash
# Download, on a machine that reaches the package registries, the wheels that the lent GPU machine
# lacks (its image has PyTorch, Triton, numba, numpy, aiohttp, click, msgpack, scikit-learn,
# matplotlib, prometheus-client, safetensors, pytest, hypothesis, but not these), for its Python
# 3.12 on x86-64, into .whl/ at the repository root (ignored by git, ~6 MiB).
# Then run benchmarks/device/check.sh there with `.whl` carried (see benchmarks/README.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl coincurve ecdsa pycryptodome plyvel blake3 pytest-asyncio
ls -l .whl
