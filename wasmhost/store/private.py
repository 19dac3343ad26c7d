"""Owner-only state on disk: the state folder 0700, the files in it 0600.

The SQLite database, its WAL and SHM hold module bytes and outbox messages in plaintext, and
``master.key`` opens every sealed secret; nobody but the gateway's user may read them. Modes are given
explicitly at creation (``os.open``/``mkdir`` with a mode) rather than by changing the process umask,
which is process-wide and would race with other threads creating files. SQLite creates its ``-wal``
and ``-shm`` files with the mode of the database file, so creating that file 0600 first covers them.
Files an older version left looser are tightened when opened. A folder that already exists is left
as it is: it may be the operator's (the default database lives in the working directory).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) with mode 0700 unless it exists."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return  # made meanwhile by another process, with the same care
    path.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask; this sets it exactly


def private_file(path: Path, *, create: bool = False) -> None:
    """Tighten `path` to 0600 if it exists and is looser; with `create`, make it (empty, 0600) if missing."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        if create:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        return
    if current & 0o077:
        os.chmod(path, current & ~0o077 & 0o777 | FILE_MODE)
