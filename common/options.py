"""The one way an option is declared, read and explained, for every command line in the tree.

An option is a dataclass field made by `opt(...)`: its default, one-line help, allowed values,
bounds (ge/gt/le/lt, as torch's own classes bound the same numbers), whether it holds a path,
and traits other modules read from the field instead of keeping lists of names apart from it
(`safe_on_resume`: may change when a run is resumed; `compared=False`: not compared across the
folds of a cross-validation). `parse(argv, Options, prog)` reads `--key value`, `--key=value`,
bare boolean flags and declared positionals into an instance and says which options were given;
`usage(...)` prints each option with its default, choices or bounds and its help. Booleans are
read one way (`coerce`). Lives at the bottom (common/) so loaders/, kernels/ and models/ can
declare their own options without importing engine.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import field, fields

from common.cli import FALSE, TRUE, split_argv
from common.errors import ConfigError



def opt(default, *, help: str = "", choices: tuple | None = None, ge=None, gt=None, le=None, lt=None,
        path: bool = False, required: bool = False, positional: bool = False, short: str = "",
        safe_on_resume: bool = False, compared: bool = True):
    """A field with its rules and help beside it. `positional`: given without `--name` (a list
    default takes every remaining positional); `short`: a one-letter alias (`-o`)."""
    meta = {k: v for k, v in (("choices", choices), ("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta.update({k: True for k, v in (("path", path), ("required", required), ("positional", positional),
                                       ("safe_on_resume", safe_on_resume)) if v})
    if help:
        meta["help"] = help
    if short:
        meta["short"] = short
    if not compared:
        meta["compared"] = False
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def like(cls, name: str, **traits):
    """The field `name` of the dataclass `cls` declared again for another dataclass (the engine's
    config composing a spec's options): same default, rules and help; `traits` add to them."""
    f = next(f for f in fields(cls) if f.name == name)
    meta = dict(f.metadata) | {k: v for k, v in traits.items() if k != "compared"}
    if traits.get("compared") is False:
        meta["compared"] = False
    return field(default=f.default, metadata=meta)


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


# ----------------------------------------------------------------------------- values

def coerce(key: str, raw, kind: type):
    """`raw` (text from the command line, or a value from a config file) as `kind`."""
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    text = str(raw).strip()
    try:
        if kind is bool:
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"--{key} expects {kind.__name__}, got {text!r}") from None


def bound_text(meta: dict) -> str:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"


def has_bounds(meta) -> bool:
    return any(k in meta for k in ("ge", "gt", "le", "lt"))


def check(key: str, value, meta, suggest_fn=None) -> None:
    """The field's own rules: choices, finite numbers, bounds."""
    if "choices" in meta and value not in meta["choices"]:
        hint = suggest_fn(str(value), list(meta["choices"])).replace("--", "") if suggest_fn else ""
        raise ConfigError(f"--{key} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}{hint}")
    if isinstance(value, float) and not math.isfinite(value):  # nan slips past every bound check
        raise ConfigError(f"--{key} must be a finite number; got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    outside = (("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"])
               or ("le" in meta and value > meta["le"]) or ("lt" in meta and value >= meta["lt"]))
    if outside:
        raise ConfigError(f"--{key} must be {bound_text(meta)}; got {value}")


# ----------------------------------------------------------------------------- help

def describe_option(name: str, f: dataclasses.Field, default=dataclasses.MISSING) -> list[str]:
    """Two lines for --help: the option with its default, choices or bounds; then its help."""
    meta = f.metadata
    default = default_of(f) if default is dataclasses.MISSING else default
    if meta.get("positional"):
        head = f"  {name.replace('-', '_').upper()}{' ...' if isinstance(default, list) else ''}"
    else:
        alias = f"-{meta['short']}, " if meta.get("short") else ""
        head = f"  {alias}--{name}" + ("" if isinstance(default, bool) else f" {json.dumps(default)}")
        if isinstance(default, bool):
            head += f"  (flag; default {'on' if default else 'off'}; or --{name} true|false)"
    if "choices" in meta:
        head += f"  {{{'|'.join(map(str, meta['choices']))}}}"
    if has_bounds(meta):
        head += f"  ({bound_text(meta)})"
    if meta.get("required"):
        head += "  (required)"
    return [head, f"      {meta.get('help', '')}"]


def usage(prog: str, summary: str, cls, extra: str = "", line: str = "") -> str:
    """The --help text of a CLI whose options are the fields of `cls`."""
    lines = [f"usage: {line or f'python -m {prog} [options]'}", "", summary.strip(), "", "options:"]
    for f in fields(cls):
        lines += describe_option(_flag(f.name), f)
    return "\n".join(lines + ([("\n" + extra.strip())] if extra else []))


# ----------------------------------------------------------------------------- parsing

def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse(argv: list[str], cls, prog: str, suggest_fn=None):
    """(an instance of `cls` from argv, the set of field names given). One ConfigError line on
    a mistake, naming `prog`."""
    table = {f.name: f for f in fields(cls)}
    short = {f.metadata["short"]: f.name for f in table.values() if f.metadata.get("short")}
    flags = {_flag(n) for n, f in table.items() if isinstance(default_of(f), bool)}
    positionals = [n for n, f in table.items() if f.metadata.get("positional")]
    values, given = {n: default_of(f) for n, f in table.items()}, set()
    try:
        for key, raw in split_argv(argv, flags, bool(positionals)):
            if key is None:
                name = _next_positional(positionals, given, values, raw)
                continue
            name = short.get(key, key.replace("-", "_"))
            if name not in table or name in positionals:
                hint = suggest_fn(key, sorted(_flag(n) for n in table if n not in positionals)) if suggest_fn else ""
                raise ConfigError(f"unknown option --{key}{hint}")
            values[name] = _value(key, raw, table[name])
            given.add(name)
        missing = [name.upper() if name in positionals else f"--{_flag(name)}"
                   for name, f in table.items() if f.metadata.get("required") and not values[name]]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} required")
    except ConfigError as exc:
        raise ConfigError(f"{prog}: {exc}") from None
    return cls(**values), frozenset(given)


def _next_positional(positionals, given, values, raw) -> str:
    for name in positionals:
        if isinstance(values[name], list):
            values[name] = [*values[name], raw] if name in given else [raw]
            given.add(name)
            return name
        if name not in given:
            values[name] = raw
            given.add(name)
            return name
    raise ConfigError(f"unexpected argument {raw!r}")


def _value(key: str, raw, f: dataclasses.Field):
    kind = type(default_of(f))
    if raw is None:
        if kind is not bool:
            raise ConfigError(f"--{key} needs a value")
        raw = "true"
    value = coerce(key, raw, kind)
    if f.metadata.get("path"):
        value = os.path.expanduser(value) if value else value
    check(key, value, f.metadata)
    return value


def take(argv: list[str], cls, prog: str, suggest_fn=None):
    """(an instance of `cls` from this tool's own options in argv, the set given, the rest of
    argv): for CLIs that pass the rest on to engine.options.config.parse_args (train options)."""
    table = {_flag(f.name): f for f in fields(cls)}
    own, rest, i = [], [], 0
    while i < len(argv):
        key, eq, _ = argv[i][2:].partition("=") if argv[i].startswith("--") else ("", "", "")
        if key not in table:
            rest.append(argv[i])
            i += 1
            continue
        own.append(argv[i])
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        takes_value = not eq and nxt is not None and not nxt.startswith("--") and (
            not isinstance(default_of(table[key]), bool) or nxt.lower() in TRUE + FALSE)
        if takes_value:
            own.append(nxt)
        i += 2 if takes_value else 1
    values, given = parse(own, cls, prog, suggest_fn)
    return values, given, rest
