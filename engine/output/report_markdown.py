"""The end every report README shares, single-label or multi-label: the epoch count and the
figures, each under its title."""
from __future__ import annotations


def figures_section(history: list[dict], figures: list[str], titles: dict[str, str]) -> list[str]:
    """Markdown lines: how many epochs history.jsonl holds (when it exists), then each figure
    file under its title from `titles` (the file name where none is given)."""
    lines = ["", f"{len(history)} epochs recorded in `history.jsonl`."] if history else []
    lines += ["", "## Figures", ""]
    for name in figures:
        lines += [f"### {titles.get(name, name)}", "", f"![{name}]({name})", ""]
    return lines
