"""Forked worker processes, for the phases that work on several tables at once
(backup writes rowid ranges of the source, restore COPYs tables and parts of them).

A worker is forked from the job, so it starts with what the parent set in ``JOB``
(source, target, tables) and dies with the job (PR_SET_PDEATHSIG: after kill -9 of
the job no worker goes on writing). A worker function returns its result, or the
MigrateError it failed with; rows it has done go to the parent's live progress.
"""
from __future__ import annotations

import gc
import threading

import structlog

from . import progress as progress_module
from .errors import MigrateError
from .progress import current

log = structlog.get_logger()
JOB: dict = {}  # what a forked worker needs, set by the parent just before the pool forks


def run(n: int, fn, items: list[tuple], on_done, init=None) -> bool:
    """fn(*item) for every item (in that order, as workers come free) in n forked worker
    processes; on_done(item, result, failed) in the parent as each one ends, ``failed``
    telling whether an earlier item failed. The first MigrateError a worker returns
    cancels the items not yet started and is raised once the running ones have ended.
    init() runs first in each worker. Returns False, having done nothing, when worker
    processes cannot be started here (no POSIX semaphores, e.g. no /dev/shm)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    try:
        mp = multiprocessing.get_context("fork")
        queue = mp.SimpleQueue()
    except (OSError, ImportError) as e:
        log.warning("cannot start worker processes; working one table after another", reason=str(e))
        return False
    JOB["queue"] = queue
    relay = threading.Thread(target=_relay, args=(queue, current()), daemon=True)
    gc.collect()  # garbage is collected here, not in a worker, where closing it would close ours
    pool = ProcessPoolExecutor(max_workers=min(n, len(items) or 1), mp_context=mp, initializer=_init,
                               initargs=(init,))
    failure: MigrateError | None = None
    killed = False
    try:
        # with fork, the first submit starts every worker: the relay thread starts after that,
        # as a forked worker inherits no running thread of ours
        futures = {pool.submit(_call, fn, *item): item for item in items}
        relay.start()
        for done in as_completed(futures):
            outcome = done.result()
            if isinstance(outcome, MigrateError):
                failure = failure or outcome
                for f in futures:
                    f.cancel()
                continue
            on_done(futures[done], outcome, failure is not None)
    except BaseException:
        killed = True
        for p in list(getattr(pool, "_processes", {}).values()):  # interrupted: their transactions roll back
            p.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # a worker killed in the middle of a put() leaves the queue's lock taken for good: after
        # a kill, the relay (a daemon thread) is left waiting instead of being told to stop
        if relay.is_alive() and not killed:
            queue.put(None)
            relay.join()
        JOB.clear()
    if failure is not None:
        raise failure
    return True


def _init(init) -> None:
    import ctypes
    import signal
    try:  # the worker dies with the parent (kill -9 of the job): its transaction rolls back
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    progress_module._current = _Relayed(JOB["queue"])
    if init is not None:
        init()


def _call(fn, *args):
    try:
        return fn(*args)
    except MigrateError as e:
        return e


def _relay(queue, progress) -> None:
    """Parent side: rows done by the workers, into the live progress."""
    while (item := queue.get()) is not None:
        progress.table = item[0]
        progress.advance(item[1])


class _Relayed:
    """Worker side of the progress: rows go to the parent, which shows them."""

    def __init__(self, queue):
        self.queue, self.table = queue, None

    def advance(self, n: int) -> None:
        self.queue.put((self.table, n))

    def start_table(self, table: str, _rows: int) -> None:
        self.table = table
