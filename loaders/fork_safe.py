"""Forking worker processes from a process that may hold other libraries' finished objects."""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def fork_safe_gc():
    """Fork worker processes with nothing left for their garbage collector to finalize.

    A forked worker inherits every object of the parent, including garbage not yet collected
    there, such as a finished DALI pipeline whose executor threads exist only in the parent.
    If the worker's gc finalizes it, its destructor waits forever on those threads (seen in
    the test suite: a DataLoader worker, and an FFCV .beton writer worker, hung in
    `dali::exec2::Executor2::~Impl`). Collecting first and freezing the survivors (`gc.freeze`,
    the fork idiom from the gc docs) leaves the workers only their own objects to collect.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
