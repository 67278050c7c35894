"""Fault injection for the reliability tests: run a command in a forked child and kill it mid-write.

:func:`run_forked` forks this (already imported) process, so a run costs no start-up, and runs
``pairless.cli.main(argv)`` in the child.  With a :class:`Faults` plan the child counts the write
system calls it makes on paths the plan selects (``os.write``, ``os.fsync``, ``os.replace``) and, at
the chosen one, sends itself SIGKILL: a write is cut after a random number of its bytes, a rename is
killed just before or just after it happens.  In ``count`` mode it only counts, so a test can draw
the kill point uniformly over every write of an uninterrupted run.  ``after_s`` kills it by a timer
instead, at an arbitrary moment of the run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Faults:
    select: Callable[[str], bool]  # which paths' writes count
    kill_at: int | None = None  # kill at this (1-based) selected write; None: only count
    seed: int = 0
    after_s: float | None = None  # or: kill after this many seconds
    count_file: Path | None = None  # the child writes its count here when it ends
    pause_file: Path | None = None  # at kill_at, instead of dying: create this file and wait to be killed
    tally: dict[str, Callable[[str], bool]] | None = None  # count mode: also count these selections apart


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _install(plan: Faults) -> None:
    rng = np.random.default_rng(plan.seed)
    state = {"count": 0}
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def die() -> None:
        if plan.pause_file is not None:
            plan.pause_file.touch()
            time.sleep(600)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover

    def hit(path: str) -> bool:
        for name, select in (plan.tally or {}).items():
            state[name] = state.get(name, 0) + bool(select(path))
        if not plan.select(path):
            return False
        state["count"] += 1
        return plan.kill_at is not None and state["count"] == plan.kill_at

    def write(fd, data):
        if hit(_fd_path(fd)):
            view = memoryview(data).cast("B")
            real_write(fd, view[: int(rng.integers(0, len(view) + 1))])  # part of it reaches the file
            die()
        return real_write(fd, data)

    def fsync(fd):
        if hit(_fd_path(fd)):
            die()
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        if hit(os.fspath(dst)):
            if rng.random() < 0.5:
                die()  # before the rename
            real_replace(src, dst, *args, **kwargs)
            die()  # just after it
        return real_replace(src, dst, *args, **kwargs)

    os.write, os.fsync, os.replace = write, fsync, replace
    if plan.after_s is not None:
        timer = threading.Timer(plan.after_s, die)
        timer.daemon = True
        timer.start()
    _install.state = state


def run_forked(
    argv: list[str], *, faults: Faults | None = None, timeout: float = 300.0, cwd: Path | None = None
) -> int:
    """Run ``pairless`` with ``argv`` in a forked child; return its exit code, or ``-9`` if it was killed."""
    return wait_forked(start_forked(argv, faults=faults, cwd=cwd), timeout=timeout, what=" ".join(argv))


def start_forked(argv: list[str], *, faults: Faults | None = None, cwd: Path | None = None) -> int:
    """Start ``pairless`` with ``argv`` in a forked child and return its pid (see :func:`wait_forked`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into the test runner
        code = 70
        try:
            import torch

            torch.set_num_threads(1)
            if cwd is not None:
                os.chdir(cwd)
            if faults is not None:
                _install(faults)
            from pairless.cli import main

            code = main(argv)
            if faults is not None and faults.count_file is not None:
                faults.count_file.write_text(json.dumps(_install.state))
        except BaseException:
            traceback.print_exc()
            code = 71
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait_forked(pid: int, *, timeout: float = 300.0, what: str = "") -> int:
    """The exit code of a forked child (``-9`` if killed); it is killed if it runs over ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"pairless {what} ran over {timeout} s")
        time.sleep(0.01)


def count_writes(
    argv: list[str], select: Callable[[str], bool], tmp: Path, *, tally=None, **kwargs
) -> tuple[int, int | dict[str, int], float]:
    """``(exit code, selected writes, seconds)`` of an uninterrupted run; with ``tally`` (name -> selection)
    the writes are counted per name and returned as a dict."""
    count_file = tmp / f"count-{time.monotonic_ns()}.json"
    start = time.monotonic()
    code = run_forked(argv, faults=Faults(select, count_file=count_file, tally=tally), **kwargs)
    seconds = time.monotonic() - start
    state = json.loads(count_file.read_text()) if count_file.exists() else {}
    counts = {name: state.get(name, 0) for name in tally} if tally else state.get("count", 0)
    return code, counts, seconds
