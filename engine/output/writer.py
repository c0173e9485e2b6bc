"""The one owner of a run's output: rank 0 writes, every other rank's writes are no-ops.

Under torchrun every rank runs the same code; routing all files, console lines and tracking
through this object replaces an `if rank == 0` at each of them."""
from __future__ import annotations

import json
from pathlib import Path

from engine.output import tracking
from common.atomic import append_jsonl, atomic_write_bytes, atomic_write_json


class RunWriter:
    def __init__(self, out: Path | None, is_main: bool = True):
        self.out, self.is_main = out, is_main
        self.tracker = tracking.Tracker()

    def start_tracking(self, config: dict, mode: str, project: str) -> None:
        if self.is_main:
            self.tracker = tracking.start_tracker(config, self.out, mode, project)

    def json(self, name: str, obj) -> None:
        if self.is_main:
            atomic_write_json(self.out / name, obj)

    def history_row(self, row: dict) -> None:
        if self.is_main:
            append_jsonl(self.out / "history.jsonl", row)
            self.tracker.log_epoch(row)

    def replace_history(self, rows: list[dict] | None) -> None:
        """Keep exactly `rows` (resume: drop lines past the checkpoint, atomically); None starts afresh."""
        if not self.is_main:
            return
        path = self.out / "history.jsonl"
        if rows is None:
            if path.exists():
                path.unlink()
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        atomic_write_bytes(path, lambda fh: fh.write(text))

    def skipped(self, items: list[tuple[str, str]]) -> None:
        self.json("data_skipped.json", [{"path": p, "reason": r} for p, r in items])

    def say(self, line: str) -> None:
        if self.is_main:
            print(line)
