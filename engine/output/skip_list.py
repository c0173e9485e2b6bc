"""The inputs a prediction could not score, beside its CSV: `<name>.skipped.csv` (path,
reason), so the CSV's rows plus this list account for every input given. A stale list from
an earlier prediction into the same file is removed when nothing was skipped."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from common.atomic import atomic_write_bytes
from loaders.datasets import skip_summary


def path_for(out_csv: Path) -> Path:
    return out_csv.with_name(out_csv.stem + ".skipped.csv")


def write(out_csv: Path, skipped: list[tuple[str, str]]) -> Path | None:
    target = path_for(out_csv)
    if not skipped:
        target.unlink(missing_ok=True)
        return None
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    atomic_write_bytes(target, lambda fh: fh.write(buf.getvalue().encode()))
    print(f"skipped {len(skipped)} input(s): {skip_summary(skipped)} (each listed in {target})", file=sys.stderr)
    return target
