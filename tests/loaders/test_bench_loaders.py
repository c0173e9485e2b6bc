"""`python -m bench.loaders` prints one JSON line with images/s, device, loader, config, versions.

In-process through `bench.loaders.main`, the function `python -m` calls (one torch import less
per test, issue 25); the entry point itself answers in tests/common/test_documented_commands.py.
For DALI, `capfd` reads the file descriptors, not only Python's streams: a line its C++ side
printed to stdout would still break the one-line output here, as in its own process (the backend
tests already run DALI's pipelines in the test process). The baseline keeps `capsys`: it forks
DataLoader workers, and where an earlier test ran FFCV in this process, numba's thread pool
writes a warning on descriptor 1 at every fork, which `python -m bench.loaders` never sees."""
import json

import pytest

from conftest import ALL


@pytest.mark.parametrize("name", [p for p in ALL if p.values[0] in ("baseline", "dali")])
def test_bench_prints_one_json_line(tiny_csv, name, request):
    from bench.loaders import main

    capture = request.getfixturevalue("capfd" if name == "dali" else "capsys")
    code = main(["--data", str(tiny_csv), "--loader", name, "--batch-size", "8", "--seconds", "1", "--device", "cpu"])
    stdout, stderr = capture.readouterr()
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
