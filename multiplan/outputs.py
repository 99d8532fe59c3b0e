"""The output folder as one set: the one writer every command uses.

A run writes its whole set into a staging folder beside the output folder and
then swaps the two folders, so that at any moment (a kill included) the output
folder holds every file of one run: the previous or the new one, never a mix.

* **Swap.** On Linux the two folders are exchanged atomically
  (``renameat2(RENAME_EXCHANGE)``); elsewhere the old folder is renamed aside and
  the staging folder renamed into place, and a run that finds the output folder
  missing with a folder renamed aside puts it back before doing anything else.
* **Other commands' files.** ``check``, ``fuse``, ``site`` and ``yield`` may share
  a folder: a set replaces the files its command owns (including ones it no
  longer writes, such as a stale ``map.html`` after ``--no-map``) and carries the
  others over, hard-linked where the file system allows.
* **Lock.** A lock file keyed by the folder's path (in ``multiplan-locks`` of the
  temp folder; an ``flock``, released by the kernel when a run dies) stops a
  second run on the same folder at once, naming the other run's PID.
* **Leftovers.** Staging folders of killed runs are removed once the lock is held,
  so no run can remove another's files.
* **Foreign folders.** A non-empty folder that holds no multiplan run (``/``, a
  home folder) is refused unless ``force``; then files are replaced one by one in
  place and the one-set guarantee does not hold.
* **OS errors** (permission, read-only, no space, not a folder, loops) are
  :class:`~multiplan.errors.OutputError`: exit 2, one line naming the folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from multiplan.errors import OutputError
from multiplan.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from multiplan.io import Writer

logger = logging.getLogger(__name__)

MARKER = ".multiplan"
"""A file in every output set: it marks the folder as multiplan's to replace."""
_STAGING = ".staging-"
_ASIDE = ".aside-"
_TEST_KILL = "MULTIPLAN_TEST_KILL"
"""Test hook: ``staging`` or ``swap`` makes the process kill itself at that step."""

CHECK_FILES = (
    "conflicts.gpkg",
    "summary.csv",
    "by_unit.csv",
    "units.csv",
    "ledger.xlsx",
    "run.json",
    "map.html",
    "report.html",
)
YIELD_FILES = (
    "yield.gpkg",
    "yield.csv",
    "yield_by_unit.csv",
    "yield_by_park.csv",
    "scenarios.csv",
)
FUSE_FILES = (
    "onemap.gpkg",
    "onemap.html",
    "differences.gpkg",
    "differences.csv",
    "differences.xlsx",
)
SITE_FILES = ("site.csv", "site.json", "site.html")
DIFF_FILES = (
    "changes.gpkg",
    "transitions.csv",
    "transitions_by_unit.csv",
    "changes.xlsx",
    "changes.html",
    "transitions.html",
)
OWNED: Mapping[str, tuple[str, ...]] = {
    "check": CHECK_FILES + YIELD_FILES,
    "map": ("map.html",),
    "yield": YIELD_FILES,
    "fuse": FUSE_FILES,
    "site": SITE_FILES,
    "diff": DIFF_FILES,
}
"""The files each command owns in an output folder (what its set replaces)."""
OUTPUT_FILES = tuple(dict.fromkeys(f for names in OWNED.values() for f in names))
"""Every file a command of multiplan may write into an output folder."""


def _fail(folder: Path, cause: str, hint: str | None = None) -> OutputError:
    return OutputError(cause, path=folder, key="--out", hint=hint)


def describe_os_error(exc: BaseException, folder: Path) -> OutputError:
    """Return an :class:`OutputError` naming the folder and the cause of an OS error.

    GDAL reports a full disk in its own words (for a GeoPackage, "no such table:
    gpkg_contents"); the free space of the folder's device is checked so that
    the message says what really happened.

    Examples
    --------
    >>> str(describe_os_error(PermissionError(13, "Permission denied"), Path("/out")))
    'file /out, key --out: cannot write the outputs: permission denied. Choose a folder you may write to.'
    """
    code = getattr(exc, "errno", None)
    hints = {
        errno.EACCES: ("permission denied", "Choose a folder you may write to"),
        errno.EPERM: ("permission denied", "Choose a folder you may write to"),
        errno.EROFS: ("the file system is read-only", "Choose a writable folder"),
        errno.ENOSPC: (
            "no space left on the device",
            "Free some space or choose another disk",
        ),
        errno.EDQUOT: (
            "the disk quota is exceeded",
            "Free some space or choose another disk",
        ),
        errno.ENOTDIR: (
            "a part of the path is a file, not a folder",
            "Give a folder path",
        ),
        errno.ELOOP: (
            "the path is a loop of symbolic links",
            "Give a real folder path",
        ),
        errno.ENAMETOOLONG: ("the path is too long", "Give a shorter path"),
    }
    if code not in hints and "disk is full" in str(exc):
        code = errno.ENOSPC
    if code not in hints:
        # GDAL says a full disk in its own words ("no such table: gpkg_contents")
        with contextlib.suppress(OSError):
            if shutil.disk_usage(_existing(folder)).free < 64 << 10:
                code = errno.ENOSPC
    if code in hints:
        cause, hint = hints[code]
    else:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        hint = None
    return _fail(folder, f"cannot write the outputs: {cause}", hint)


class OutputFolder:
    """An output folder, locked for one run, that takes one whole set of files.

    Use it as a context manager: entering checks the folder and takes the lock
    (a second run stops at once), :meth:`write` swaps a new set in, leaving
    releases the lock.

    Parameters
    ----------
    path
        The output folder; created if needed.
    force
        Accept a non-empty folder that holds no multiplan run; its files are then
        replaced one by one, in place.
    inputs
        Input files of the run, which no output may replace.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with OutputFolder(Path(tmp) / "out") as folder:
    ...         files = folder.write({"a.txt": lambda p: p.write_text("1")}, command="demo")
    ...     sorted(p.name for p in (Path(tmp) / "out").iterdir())
    ['.multiplan', 'a.txt']
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        force: bool = False,
        inputs: Iterable[Path] = (),
    ) -> None:
        self.path = Path(path).absolute()
        self.force = force
        self.inputs = frozenset(_resolved(Path(p)) for p in inputs)
        self._lock: IO[str] | None = None
        self._in_place = False

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> OutputFolder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Check the folder and take its lock (idempotent).

        Raises
        ------
        OutputError
            When another run holds the folder, it is not a folder, it cannot be
            written, or it holds something else than multiplan runs.
        """
        if self._lock is not None:
            return
        path = self.path
        try:
            _check_writable(path)
            lock = lock_path(path).open("a+", encoding="utf-8")
        except OutputError:
            raise
        except OSError as exc:
            raise describe_os_error(exc, path) from exc
        if not _try_lock(lock):
            lock.seek(0)
            other = lock.read().strip() or "unknown"
            lock.close()
            raise _fail(
                path,
                f"another multiplan run (PID {other}) is writing to this folder",
                "Wait for it to finish, or give another --out",
            )
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock
        try:
            self._recover()
            self._check_contents()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock (the lock file stays, so no other run locks a stale copy)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                _unlock(self._lock)
                self._lock.close()
            self._lock = None

    def _siblings(self, mark: str) -> list[Path]:
        prefix = f".{self.path.name}{mark}"
        try:
            return sorted(
                p for p in self.path.parent.iterdir() if p.name.startswith(prefix)
            )
        except OSError:
            return []

    def _recover(self) -> None:
        """Put back a folder renamed aside by a killed swap; remove killed runs' staging."""
        aside = self._siblings(_ASIDE)
        if not self.path.exists() and aside:
            aside[-1].rename(self.path)
            logger.warning(
                "a run was killed while swapping %s; its previous outputs were put back",
                self.path,
            )
            aside = aside[:-1]
        for leftover in [*aside, *self._siblings(_STAGING)]:
            shutil.rmtree(leftover, ignore_errors=True)
            logger.info("removed %s, left by a killed run", leftover)

    def _check_contents(self) -> None:
        path = self.path
        if self.inputs and (
            path in self.inputs or any(path in p.parents for p in self.inputs)
        ):
            inside = sorted(p for p in self.inputs if path == p or path in p.parents)
            raise _fail(
                path,
                f"the output folder holds an input of the project ({inside[0]})",
                "Choose another output folder; no input is ever written",
            )
        if not path.is_dir():
            return
        entries = [p.name for p in path.iterdir()]
        ours = not entries or MARKER in entries or _legacy_run(path, entries)
        if not ours:
            if not self.force:
                raise _fail(
                    path,
                    f"the output folder is not empty and holds no multiplan run ({len(entries)} entries, e.g. {sorted(entries)[0]})",
                    "Give an empty or new folder, or add --force to write into it file by file",
                )
            self._in_place = True
            logger.warning(
                "writing into %s file by file (--force): it holds other files, so the outputs are not swapped in as one set",
                path,
            )

    # ------------------------------------------------------------------ write
    def write(self, files: Mapping[str, Writer], *, command: str) -> list[Path]:
        """Write ``files`` as one set, replacing what ``command`` owns in the folder.

        Parameters
        ----------
        files
            File name → a function that writes the file to a path it is given.
        command
            The command whose files the set replaces (see :data:`OWNED`).

        Returns
        -------
        list of Path
            The final paths of the files written, in the order given.

        Raises
        ------
        OutputError
            On an OS error (permission, space, …); the previous outputs are untouched.
        """
        self.open()
        owned = set(OWNED.get(command, ())) | set(files)
        for name in files:
            if _resolved(self.path / name) in self.inputs:
                raise _fail(
                    self.path / name,
                    f"writing {name} there would overwrite an input of the project",
                    "Choose another output folder; no input is ever written",
                )
        if self._in_place:
            return self._write_in_place(files)
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.path.name}{_STAGING}{os.getpid()}-", dir=parent
                )
            )
            # mkdtemp makes 0700 folders; an output folder is shared like any other
            staging.chmod(0o777 & ~_umask())
        except OSError as exc:
            raise describe_os_error(exc, self.path) from exc
        try:
            for name, write in files.items():
                write(staging / name)
            self._carry_over(staging, owned)
            (staging / MARKER).write_text(
                json.dumps({"multiplan": __version__, "command": command}) + "\n",
                encoding="utf-8",
            )
            _test_kill("staging")
            self._swap(staging)
        except BaseException as exc:
            # judge the error before the staging folder goes: a full disk is then still full
            error = (
                describe_os_error(exc, self.path)
                if isinstance(exc, OSError) or _is_gdal_error(exc)
                else None
            )
            shutil.rmtree(staging, ignore_errors=True)
            if error is not None:
                raise error from exc
            raise
        return [self.path / name for name in files]

    def _carry_over(self, staging: Path, owned: set[str]) -> None:
        """Link the files the set does not own (other commands', the user's) into staging."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name in owned or entry.name == MARKER or _is_temporary(entry.name):
                continue
            target = staging / entry.name
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(
                    entry, target, symlinks=True, copy_function=_link_or_copy
                )
            else:
                _link_or_copy(entry, target)

    def _swap(self, staging: Path) -> None:
        if not self.path.exists():
            staging.rename(self.path)
            return
        if os.environ.get(_TEST_KILL) != "swap" and _exchange(staging, self.path):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the previous set
            return
        aside = Path(
            tempfile.mkdtemp(
                prefix=f".{self.path.name}{_ASIDE}{os.getpid()}-", dir=self.path.parent
            )
        )
        aside.rmdir()
        self.path.rename(aside)
        _test_kill("swap")
        staging.rename(self.path)
        shutil.rmtree(aside, ignore_errors=True)

    def _write_in_place(self, files: Mapping[str, Writer]) -> list[Path]:
        out = []
        for name, write in files.items():
            final = self.path / name
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{name}.tmp-", suffix=final.suffix, dir=self.path
            )
            os.close(fd)
            tmp = Path(tmp_name)
            tmp.unlink()
            try:
                write(tmp)
                tmp.replace(final)
            except Exception as exc:
                for leftover in tmp.parent.glob(tmp.name + "*"):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                if isinstance(exc, OSError) or _is_gdal_error(exc):
                    raise describe_os_error(exc, self.path) from exc
                raise
            out.append(final)
        return out


def write_set(
    out: str | os.PathLike[str] | OutputFolder,
    files: Mapping[str, Writer],
    *,
    command: str,
    inputs: Iterable[Path] = (),
) -> list[Path]:
    """Write ``files`` as one output set into ``out`` (a path, or a folder already open).

    ``inputs`` are files no output may replace (and that the folder may not hold).

    Raises
    ------
    OutputError
        When the folder is busy, not writable, or holds something else.
    """
    if isinstance(out, OutputFolder):
        return out.write(files, command=command)
    with OutputFolder(out, inputs=inputs) as folder:
        return folder.write(files, command=command)


def _existing(path: Path) -> Path:
    """Return the nearest ancestor of ``path`` (or itself) that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _check_writable(path: Path) -> None:
    """Check, before any work, that ``path`` can become an output folder; create nothing.

    Raises
    ------
    OSError
        With the errno that says why not: ENOTDIR (a part of the path is a file),
        ELOOP (a loop of symbolic links), EROFS (read-only), EACCES.
    """
    for candidate in (path, *path.parents):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            if candidate == path:
                raise OutputError(
                    "the output folder is a file",
                    path=path,
                    key="--out",
                    hint="Give a folder for the outputs",
                )
            raise NotADirectoryError(
                errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(candidate)
            )
        if os.statvfs(candidate).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(candidate))
        # the staging folder is made beside the output folder: its parent must take it
        target = path.parent if candidate == path else candidate
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return


def lock_path(folder: Path) -> Path:
    """Return the lock file of an output folder: in a shared folder of the temp dir, keyed by path.

    The lock lives outside the project so that a run leaves nothing beside its
    inputs; the file is world-writable so that planners sharing a machine see
    each other's runs.
    """
    locks = Path(tempfile.gettempdir()) / "multiplan-locks"
    if not locks.is_dir():
        locks.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            locks.chmod(0o1777)
    key = hashlib.sha256(os.fsencode(_resolved(folder))).hexdigest()[:32]
    lock = locks / f"{key}.lock"
    if not lock.exists():
        lock.touch()
        with contextlib.suppress(OSError):
            lock.chmod(0o666)
    return lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _resolved(path: Path) -> Path:
    """Return the path with symbolic links resolved where possible (a loop stays as given)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _legacy_run(path: Path, entries: list[str]) -> bool:
    """Return whether a folder without a marker holds only multiplan outputs (an older run)."""
    if "run.json" in entries:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((path / "run.json").read_text(encoding="utf-8"))
            if isinstance(data, dict) and "multiplan" in data:
                return True
    return all(e in OUTPUT_FILES or _is_temporary(e) for e in entries)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _link_or_copy(src: Any, dst: Any) -> Any:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _is_gdal_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("pyogrio", "rasterio"))


def _test_kill(step: str) -> None:
    if os.environ.get(_TEST_KILL) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- platform


def _exchange(a: Path, b: Path) -> bool:
    """Exchange two folders atomically (Linux ``renameat2``); return False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(
        at_fdcwd,
        os.fsencode(a),
        at_fdcwd,
        os.fsencode(b),
        ctypes.c_uint(rename_exchange),
    )
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(f: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
