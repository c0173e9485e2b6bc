"""`python -m bench.loaders` prints one JSON line with images/s, device, loader, config, versions.

The baseline and the option error run in-process (`bench.loaders.main`, the function `python -m`
calls; no torch import per test, issue 25); DALI keeps its own interpreter (its threads and
plugins stay out of the test process), which also covers the `python -m` entry point."""
import json
import subprocess
import sys

import pytest

from conftest import ALL, REPO_ROOT


@pytest.mark.parametrize("name", [p for p in ALL if p.values[0] in ("baseline", "dali")])
def test_bench_prints_one_json_line(tiny_csv, name, capsys):
    argv = ["--data", str(tiny_csv), "--loader", name, "--batch-size", "8", "--seconds", "1", "--device", "cpu"]
    if name == "baseline":
        from bench.loaders import main
        code = main(argv)
        stdout, stderr = capsys.readouterr()
    else:
        run = subprocess.run([sys.executable, "-m", "bench.loaders", *argv], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300)
        code, stdout, stderr = run.returncode, run.stdout, run.stderr
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["loader"] == name and result["images_per_second"] > 0 and result["device"].startswith("cpu")
    assert result["config"]["batch_size"] == 8 and "torch" in result["versions"]


def test_bench_unknown_loader_is_exit_2(tiny_csv, capsys):
    from bench.loaders import main
    code = main(["--data", str(tiny_csv), "--loader", "nope", "--seconds", "1"])
    assert code == 2 and "nope" in capsys.readouterr().err
