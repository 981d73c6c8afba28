"""One writer per run, and no leftovers from killed writers.

`writing(runs_root, run_id)` holds an OS file lock (filelock; `fcntl.flock` here) on the run
for as long as a scan or sweep writes it. A second process asking for the same run is refused
at once with the holder's pid and command. The lock is the kernel's, so a killed holder
releases it by dying: there are no stale locks to break. Lock files live outside the data
directory, in the machine's temporary directory under a hash of the runs directory's real path
(`<tmp>/headlab-locks/<hash>/<run_id>.lock`), so a refused or failed command leaves nothing in
the data directory; they are kept (deleting a lock file others may have open would let two
writers in). Writers on different machines sharing a data directory are not serialised.

Temporary files and staging directories carry their writer's pid in their name
(`.NAME.<pid>.tmp-*`); `remove_leftovers(directory)` deletes those whose writer is no longer
alive, so a write killed by SIGKILL leaves nothing behind after the next write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import filelock

from probes.core.errors import HeadlabError

CLAIM_ATTEMPTS = 1000  # names `claim_new` tries: base, base-2, …
_LEFTOVER = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp-[^/]+$")


class RunLockedError(HeadlabError, RuntimeError):
    """Another live process is writing the same run; the message names it."""


def temporary_prefix(name: str) -> str:
    """Prefix of this process's temporary file or directory for `name`."""
    return f".{name}.{os.getpid()}.tmp-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete temporary files and staging directories in `directory` whose writer has died;
    return what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def writing(runs_root: Path, run_id: str, what: str | None = None) -> Iterator[None]:
    """Hold the write lock of run `run_id` (under `runs_root`) for the duration; refuse at once,
    naming the holder, if another process holds it."""
    directory = lock_directory(runs_root)
    lock = filelock.FileLock(directory / f"{run_id}.lock", timeout=0)
    holder = directory / f"{run_id}.holder.json"
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunLockedError(
            f"{what or f'run {run_id!r}'} is being written by another process "
            f"({_describe(holder)}); wait for it to finish or stop it"
        ) from None
    try:
        record = {"pid": os.getpid(), "command": " ".join(sys.argv), "since": time.time()}
        staged = holder.with_name(f"{holder.name}.{os.getpid()}")
        staged.write_text(json.dumps(record))
        os.replace(staged, holder)  # whole or absent: a refused process never reads half
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


@contextmanager
def claim_new(runs_root: Path, base: str) -> Iterator[str]:
    """Hold the write lock of a new run named `base`, or else `base-2`, `base-3`, …: the first
    whose lock is free and which does not exist under `runs_root`. Two processes that pick the
    same name at the same time get different ids, and an existing run is never taken."""
    lock_directory(runs_root)  # a lock directory that cannot be made fails here, once
    for n in range(1, CLAIM_ATTEMPTS + 1):
        run_id = base if n == 1 else f"{base}-{n}"
        lock = ExitStack()
        try:
            lock.enter_context(writing(runs_root, run_id))
        except RunLockedError:  # another process is creating this one right now
            continue
        with lock:
            if (runs_root / run_id).exists():
                continue
            yield run_id
            return
    raise RunLockedError(
        f"runs {base!r} to {base}-{CLAIM_ATTEMPTS} all exist or are being written under "
        f"{runs_root}; give a --run-id"
    )


def lock_directory(runs_root: Path) -> Path:
    """Where the locks of the runs under `runs_root` live (created on first use)."""
    key = hashlib.sha256(str(runs_root.resolve()).encode()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / "headlab-locks" / key
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunLockedError(
            f"cannot make the lock directory {directory}: {error.strerror or error} "
            "(set TMPDIR to a writable directory)"
        ) from None
    return directory


def _describe(holder: Path) -> str:
    record = None
    for _ in range(50):  # the holder writes its record just after taking the lock
        try:
            record = json.loads(holder.read_text())
            break
        except (OSError, ValueError):
            time.sleep(0.01)
    if record is None:
        return "holder unknown"
    since = time.strftime("%H:%M:%S", time.localtime(float(record.get("since", 0))))
    return f"pid {record.get('pid')}, `{record.get('command', '?')}`, since {since}"


def usual_mode(path: Path) -> None:
    """mkstemp/mkdtemp make private (0600/0700) temporaries; a run is read by colleagues and
    the dashboard's user, so give it the mode a plain open/mkdir would (the umask's)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
