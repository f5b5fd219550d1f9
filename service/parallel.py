"""CPU-bound work in forked worker processes: results in order, nothing lost, nothing hangs.

Used for the two passes over a Bulk Data export (partition, then screen). The workers are
forked, so they inherit what the caller prepared (mappings, a partition) instead of receiving
it pickled; only each item and its result cross the process boundary.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def fork_available() -> bool:
    """Worker processes need `fork` (Linux, the service's platform)."""
    return "fork" in multiprocessing.get_all_start_methods()


def ordered_map(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    on_broken: Callable[[], None] = lambda: None,
) -> Iterator[Result]:
    """`function(item)` for every item, in the items' order, computed by `workers` processes.

    `function` must be a module-level function (it is sent by name). At most two items per
    worker are in flight, so finished results do not pile up while the caller works on them.
    If a worker dies (the OOM killer, a signal), the pool is broken: `on_broken` is called and
    every item not yet returned is computed in this process instead.
    """
    done = 0
    if workers > 1 and fork_available() and len(items) > 1:
        # The workers inherit this process's objects; frozen, the collector in each worker
        # leaves them alone instead of touching (and so copying) every inherited page.
        gc.freeze()
        try:
            for result in _from_pool(function, items, workers):
                done += 1
                yield result
        finally:
            gc.unfreeze()
        if done < len(items):
            on_broken()
    for item in items[done:]:
        yield function(item)


def _from_pool(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int
) -> Iterator[Result]:
    """Results from a pool, in order, until the items end or the pool breaks.

    A dead worker breaks the pool at a moment of its own: the parent notices it either when it
    waits for a result or when it submits the next item (`submit` raises BrokenProcessPool
    once the pool's manager thread has seen the death). Both moments end this generator the
    same way, so the caller computes the rest whichever it was.
    """
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        in_flight: deque[Future[Result]] = deque()
        submitted = 0
        while in_flight or submitted < len(items):
            try:
                while submitted < len(items) and len(in_flight) < 2 * workers:
                    in_flight.append(pool.submit(function, items[submitted]))
                    submitted += 1
                result = in_flight.popleft().result()
            except BrokenProcessPool:
                return
            yield result
