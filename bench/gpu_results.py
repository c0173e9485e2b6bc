"""What a GPU-check call hands back, within what the machine returns: three files per call.

The machine returns at most 8 files from $OUT, each at most 16 MiB and at most two folders down,
and which 8 is not ours to choose. So every step writes into a private work folder, and $OUT gets
exactly `<label>.summary.json`, `<label>.summary.md` and `<label>.tar.gz` (the logs, the step
JSONs and XMLs, the run folder's small files): two calls in one $OUT make 6 files, none in a
folder, each under 8 MiB. The archive holds at most ARCHIVE_RAW_BYTES before compression (so it
stays under 8 MiB whatever gzip does); what does not fit or is too large (the checkpoint, big
PNGs or traces) is listed in the summary with its size, never dropped silently. All three are
rewritten after every step, so a lease that ends mid-call still leaves the steps that ran.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from bench.gpu_plan import RESULT_FILE_MAX_BYTES
from common.atomic import atomic_write_bytes

ARCHIVE_RAW_BYTES = 7 * 2**20
LOG_KEEP_BYTES = 1 * 2**20          # a longer log keeps its first 64 KiB and its last 1 MiB
MEMBER_MAX_BYTES = {".png": 512 * 2**10, ".gz": 2 * 2**20}
SMALL_SUFFIXES = (".log", ".json", ".jsonl", ".xml", ".md", ".txt", ".csv", ".png", ".gz")
LEFT_OUT_SUFFIXES = (".pt", ".pth", ".ckpt", ".lock")
TAIL_LINES = 20
STDOUT_SUMMARY_CHARS = 9000         # the machine returns the last 12,000 characters of stdout


def _log_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) <= LOG_KEEP_BYTES + 64 * 2**10:
        return data
    cut = len(data) - LOG_KEEP_BYTES
    return data[:64 * 2**10] + f"\n[... {cut - 64 * 2**10} bytes cut by the GPU check ...]\n".encode() + data[cut:]


CACHE_DIR = "cache"                 # the steps' MEDTRAIN_CACHE (synthetic JPEGs): never results
LEFT_OUT_LISTED = 40


def _candidates(work: Path, failed: set[str]) -> list[Path]:
    """Files in the order they claim room: failed steps' logs, other logs, JSON/XML, the rest."""
    files = sorted(p for p in work.rglob("*") if p.is_file() and p.relative_to(work).parts[0] != CACHE_DIR)

    def rank(p: Path) -> tuple:
        if p.suffix == ".log":
            return (0 if p.stem in failed else 1, p.name)
        return ({".json": 2, ".jsonl": 2, ".xml": 2, ".md": 3, ".txt": 3, ".csv": 3}.get(p.suffix, 4), str(p))
    return sorted(files, key=rank)


def _pick(work: Path, failed: set[str]) -> tuple[list[tuple[str, bytes]], dict]:
    chosen, left_out, used = [], {}, 0
    for path in _candidates(work, failed):
        name = str(path.relative_to(work))
        size = path.stat().st_size
        if path.suffix in LEFT_OUT_SUFFIXES or path.suffix not in SMALL_SUFFIXES:
            left_out[name] = f"{size} bytes: not a small result file"
            continue
        if size > MEMBER_MAX_BYTES.get(path.suffix, 1 << 62):
            left_out[name] = f"{size} bytes: over {MEMBER_MAX_BYTES[path.suffix]} for a {path.suffix}"
            continue
        data = _log_bytes(path) if path.suffix == ".log" else path.read_bytes()
        if used + len(data) > ARCHIVE_RAW_BYTES:
            left_out[name] = f"{size} bytes: the archive's {ARCHIVE_RAW_BYTES} bytes were taken"
            continue
        chosen.append((name, data))
        used += len(data)
    if len(left_out) > LEFT_OUT_LISTED:
        rest = list(left_out)[LEFT_OUT_LISTED:]
        left_out = {k: left_out[k] for k in list(left_out)[:LEFT_OUT_LISTED]}
        left_out["..."] = f"{len(rest)} more files"
    return chosen, left_out


def write_archive(work: Path, target: Path, failed: set[str]) -> dict:
    """`target` (.tar.gz) from the small files of `work`; returns {member: bytes} and the left out."""
    chosen, left_out = _pick(work, failed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in chosen:
            info = tarfile.TarInfo(f"{target.name.split('.')[0]}/{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    if buffer.tell() > RESULT_FILE_MAX_BYTES:  # cannot happen with ARCHIVE_RAW_BYTES; say so if it does
        raise RuntimeError(f"{target.name} would be {buffer.tell()} bytes")
    atomic_write_bytes(target, lambda fh: fh.write(buffer.getvalue()))
    return {"members": {name: len(data) for name, data in chosen}, "left_out": left_out,
            "bytes": buffer.tell()}


def _tail(log: Path, width: int) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ["(no log)"]
    return [line if len(line) <= width else line[:width - 3] + "..." for line in lines[-TAIL_LINES:]]


def human_summary(summary: dict, work: Path) -> str:
    """The text printed last on stdout (and the top of summary.md): each step's status and time
    against its limit, then the last lines of each failed step's log, inside STDOUT_SUMMARY_CHARS."""
    steps = summary["steps"]
    head = [f"== GPU check {summary['label']}{' (CPU rehearsal)' if summary['rehearse'] else ''}: "
            f"{summary['seconds']} s; limits sum {summary['limits_sum_s']:.0f} s of {summary['budget_s']:.0f} s =="]
    for name in summary["planned"]:
        r = steps.get(name)
        if r is None:
            head.append(f"{name:14s} NOT RUN: {summary['not_run'].get(name, '?')}")
        elif "skipped" in r:
            head.append(f"{name:14s} skipped: {r['skipped']}")
        else:
            head.append(f"{name:14s} {r['status']}: {r['seconds']:.0f} s of {r['limit']:.0f} s (CPU {r['cpu_s']:.0f} s)")
    for name, how in summary["left_out_for_time"].items():
        head.append(f"{name:14s} left out for time: {how}")
    for problem in summary["problems"]:
        head.append(f"problem: {problem}")
    head.append(f"results: {', '.join(summary['result_files'])} (in {summary['out']})")
    failed = [n for n, r in steps.items() if r.get("status") not in (None, "ok") and "skipped" not in r
              and not r["status"].startswith("all ")]
    budget = STDOUT_SUMMARY_CHARS - sum(len(line) + 1 for line in head)
    width = max(60, min(160, budget // max(1, len(failed) * (TAIL_LINES + 1))))
    tails = []
    for name in failed:
        tails += [f"-- {name}: last {TAIL_LINES} lines of {name}.log --", *_tail(work / f"{name}.log", width)]
    text = "\n".join(tails)
    if len(text) > budget:
        text = text[-budget:]
    return "\n".join(([text] if text else []) + head)


def write_summary(out: Path, label: str, summary: dict, text: str) -> None:
    atomic_write_bytes(out / f"{label}.summary.json",
                       lambda fh: fh.write((json.dumps(summary, indent=2, default=str) + "\n").encode()))
    rows = ["| step | status | seconds | limit | CPU s | plan: set-up + GPU (s) |", "|---|---|---|---|---|---|"]
    for name in summary["planned"]:
        r = summary["steps"].get(name, {})
        plan = summary["plan"].get(name, {})
        rows.append(f"| {name} | {r.get('status') or r.get('skipped') or 'not run'} | {r.get('seconds', '')} | "
                    f"{r.get('limit', '')} | {r.get('cpu_s', '')} | {plan.get('setup_s', '')} + {plan.get('gpu_s', '')} |")
    md = f"# GPU check {label}\n\n```\n{text}\n```\n\n" + "\n".join(rows) + "\n"
    if summary.get("archive", {}).get("left_out"):
        md += "\nLeft out of the archive:\n\n" + "\n".join(f"- {k}: {v}" for k, v in summary["archive"]["left_out"].items()) + "\n"
    atomic_write_bytes(out / f"{label}.summary.md", lambda fh: fh.write(md.encode()))
