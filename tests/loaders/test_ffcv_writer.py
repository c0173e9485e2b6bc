"""`python -m loaders.ffcv write`: a real .beton written and read back (FFCV's own reader).

The CLI's `main` runs in this process: importing FFCV compiles numba's typed dict (about 8 s
on 2 cores), paid once per test process instead of once per write."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from loaders import images

from conftest import needs

pytestmark = pytest.mark.skipif(needs("ffcv").marks[0].args[0], reason="ffcv not installed")


@pytest.fixture
def write(capsys):
    """`python -m loaders.ffcv write ARGS`, through the module's `main`."""
    from loaders.ffcv import main

    def run(args):
        capsys.readouterr()
        code = main(["write", *args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def _read_back(beton):
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(beton), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    xs, ys = zip(*loader)
    return np.concatenate(xs), np.concatenate(ys)[:, 0]


def test_write_keeps_original_jpegs_and_labels(tiny_csv, tmp_path, write):
    open(tiny_csv / "images" / "im005.jpg", "wb").close()  # left out, reported
    out = tmp_path / "tiny.beton"
    run = write(["--data", str(tiny_csv), "--out", str(out)])
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["images"] == 35 and summary["skipped"] == 1
    meta = json.loads((tmp_path / "tiny.beton.json").read_text())
    x, y = _read_back(out)
    assert y.tolist() == meta["labels"] and len(meta["files"]) == 35
    for row in (0, 17, 34):  # the stored bytes are the original file: turbojpeg decodes it
        original = images.decode(images.read_bytes(meta["files"][row]), None)
        assert np.abs(x[row].astype(int) - original.astype(int)).mean() < 2


def test_write_reencodes_and_shrinks_when_asked(tiny_csv, tmp_path, write):
    out = tmp_path / "small.beton"
    run = write(["--data", str(tiny_csv), "--out", str(out), "--max-res", "16", "--jpeg-quality", "75"])
    assert run.returncode == 0, run.stderr
    x, _ = _read_back(out)
    assert x.shape[1:] == (16, 16, 3)


def test_bad_arguments_are_one_line_exit_2(tiny_csv, tmp_path, write):
    run = write(["--data", str(tiny_csv), "--out", str(tmp_path / "x.beton"), "--jpeg-quality", "0"])
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "--jpeg-quality" in run.stderr
    run = write(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.beton")])
    assert run.returncode == 2 and "nowhere" in run.stderr


def test_writer_workers_leave_the_parents_garbage_to_the_parent(tmp_path, monkeypatch):
    """The writer forks its workers; one that finalized a finished DALI pipeline it inherited
    from the parent waited forever on executor threads that exist only in the parent (a hang seen
    in the suite). Garbage with a finalizer stands in for that pipeline: the parent finalizes it,
    never a worker, even when a worker's collector runs."""
    import gc
    import os

    from loaders.ffcv import write_beton

    finalized_in = tmp_path / "finalized_in"

    class Garbage:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            with open(finalized_in, "a") as fh:
                fh.write(f"{os.getpid()}\n")

    parent, read = os.getpid(), images.read_bytes

    def read_in_worker(path):
        if os.getpid() != parent:
            gc.collect()  # the worker's collector runs, as any allocation there may make it
        return read(path)

    files = [str(p) for p in _jpegs(tmp_path / "images", 8)]
    monkeypatch.setattr(images, "read_bytes", read_in_worker)
    gc.disable()  # the garbage stays uncollected until the write forks its workers
    try:
        Garbage()
        write_beton(files, np.arange(8) % 2, tmp_path / "g.beton", 32, None, workers=2)
    finally:
        gc.enable()
    assert finalized_in.read_text().split() == [str(parent)]


def _jpegs(folder, n):
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (32, 32), (i * 30, 90, 90)).save(folder / f"{i}.jpg")
    return sorted(folder.glob("*.jpg"))
