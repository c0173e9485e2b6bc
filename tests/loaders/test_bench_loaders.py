"""`python -m bench.loaders` prints one JSON line with images/s, device, loader, config, versions."""
import json
import subprocess
import sys

import pytest

from conftest import ALL, REPO_ROOT


@pytest.mark.parametrize("name", [p for p in ALL if p.values[0] in ("baseline", "dali")])
def test_bench_prints_one_json_line(tiny_csv, name):
    run = subprocess.run([sys.executable, "-m", "bench.loaders", "--data", str(tiny_csv), "--loader", name,
                          "--batch-size", "8", "--seconds", "1", "--device", "cpu"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["loader"] == name and result["images_per_second"] > 0 and result["device"].startswith("cpu")
    assert result["config"]["batch_size"] == 8 and "torch" in result["versions"]


def test_bench_unknown_loader_is_exit_2(tiny_csv):
    run = subprocess.run([sys.executable, "-m", "bench.loaders", "--data", str(tiny_csv), "--loader", "nope",
                          "--seconds", "1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "nope" in run.stderr
