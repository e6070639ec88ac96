"""``pouw-bench --emulate-isa avx2``: the command re-executes itself under the emulation's
environment and every JSON says so; ``_int_mm`` is timed but never the fastest exact reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.framework import EMULATE_ENV, EMULATIONS


def test_emulated_run_is_labelled_and_keeps_int_mm_out_of_the_reference(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {*EMULATIONS["avx2"], EMULATE_ENV}}
    command = [sys.executable, "-m", "benchmarks.cli", "matmul", "--tiny", "--no-progress", "--emulate-isa", "avx2",
               "--out", str(tmp_path)]
    subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=True)
    document = json.loads((tmp_path / "matmul.json").read_text())
    assert document["status"] == "ok"
    assert document["machine"]["emulated_isa"] == "avx2"
    assert document["machine"]["emulation_env"] == {**EMULATIONS["avx2"], EMULATE_ENV: "avx2"}
    assert "(float32)" in document["device"]["matmul_backend"]
    for row in document["results"]["sizes"]:
        assert row["exact_plain"]["int_mm"]["representative"] is False
        assert row["exact_plain"]["float32"]["representative"] is True
        assert row["fastest_exact_plain"]["name"] in {"float32", "float64"}
