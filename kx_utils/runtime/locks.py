"""Exclusive locks on folders, so that two ``reproduce`` commands never interleave their writes.

A lock is an ``flock`` on a small file in the folder: the kernel releases it when its
holder exits, however it exits (a ``kill -9`` included), so a stale lock cannot block a
later run.  The holder writes who it is into the file, and a second command that finds
the folder taken stops at once with :class:`FolderBusy`, naming the holder.

Why stop rather than wait: a run of the ``mini`` profile takes over an hour, and a
command that sits silently behind another is mistaken for a hung one; the usual cause
is a forgotten run in another terminal, which the message names.  Rerunning after the
first ends costs nothing, since everything it finished is cached.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import sys
from pathlib import Path
from typing import Iterator


class FolderBusy(RuntimeError):
    """The folder is locked by another process; ``holder`` is what that process wrote about itself."""

    def __init__(self, message: str, holder: str):
        self.holder = holder
        super().__init__(message)


def _holder_text(purpose: str) -> str:
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {purpose} "
            f"({' '.join(sys.argv) or sys.executable})")


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, purpose: str, busy_hint: str) -> Iterator[None]:
    """Hold ``lock_file`` exclusively for the ``with`` block, or raise :class:`FolderBusy`.

    ``purpose`` says what the holder is doing (written into the lock file for the next
    comer); ``busy_hint`` ends the error message: what the second command can do instead.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing to lock with
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    # "a+": opening must not erase the holder's note before we know whether we hold the lock
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its name yet"
            raise FolderBusy(f"{lock_file.parent} is in use by another kx_utils command ({holder}); "
                             f"{busy_hint}", holder) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(_holder_text(purpose) + "\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
