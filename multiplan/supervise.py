"""The console script: runs the command in a child process and reports native crashes.

Only the standard library is imported here, so that the supervising process starts
in a few tens of milliseconds; the child, a fork of it, imports the command line
(:mod:`multiplan.cli`) and what its command needs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import sys
import threading

_CHILD = "MULTIPLAN_SUPERVISED"
_CRASHES = {
    signal.SIGSEGV: "a segmentation fault",
    signal.SIGBUS: "a bus error",
    signal.SIGILL: "an illegal instruction",
    signal.SIGFPE: "a floating-point exception",
    signal.SIGABRT: "an abort",
}


def run() -> None:
    """Run ``multiplan`` as the console script does: the command in a child process.

    A crash inside native code (GEOS, GDAL, PROJ) kills a process with a signal
    and no message. Running the command in a child lets this process turn such
    a crash into one line and exit code 3, as any other internal error. Signals
    the user sends (Ctrl-C, ``kill``) are passed on to the child; a command
    interrupted by Ctrl-C exits 130, as shells expect (not click's 1, which
    means conflicts were found).

    The child is a fork of this process, made before anything but the standard
    library is imported and before any thread starts: it saves starting a second
    interpreter (about a tenth of a second). Where there is no ``fork``
    (Windows), the command runs in this process.
    """
    if os.environ.get(_CHILD) or not hasattr(os, "fork"):
        _command()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run the command, exit with its code
        os.environ[_CHILD] = "1"
        os.environ["MULTIPLAN_COMMAND"] = shlex.join(["multiplan", *sys.argv[1:]])
        try:
            _command()
        except SystemExit as exc:
            _leave(exc.code)
        _leave(0)

    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signum = -code
        if signum in _CRASHES:
            sys.stderr.write(
                f"multiplan: internal error: the process crashed with {_CRASHES[signal.Signals(signum)]} "
                "in native code; rerun with --debug to see where\n"
            )
            sys.stderr.flush()
            sys.exit(3)
        sys.exit(128 + signum)
    if code == 1 and signal.SIGINT in received:
        # click ends an interrupted command with "Aborted!" and exit 1, the code of
        # "conflicts found"; a script must not take Ctrl-C for a finding
        sys.exit(128 + signal.SIGINT)
    sys.exit(code)


def _leave(code: str | int | None) -> None:
    """End the child with ``code`` without tearing the interpreter down.

    Once the command has returned, its files are written and closed. What is
    left is the interpreter freeing every module and object one by one (about
    a tenth of a second with GDAL, PROJ, pandas and folium loaded), which a
    process about to end does not need: the exit handlers run (a scratch
    folder's removal among them), the streams are flushed, and the process
    ends. A code that is not a number, or a thread still running, takes the
    ordinary way out.
    """
    if code is None:
        code = 0
    others = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon
    ]
    if not isinstance(code, int) or others:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _command() -> None:
    """Run the command line in this process (it exits with the command's code)."""
    if os.environ.get("MULTIPLAN_TEST_SEGFAULT"):  # test hook: crash as GEOS would
        import faulthandler

        faulthandler._sigsegv()  # type: ignore[attr-defined]
    try:
        from multiplan.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the libraries load: no traceback
        sys.stderr.write("Aborted!\n")
        sys.exit(128 + signal.SIGINT)
    main(prog_name="multiplan")
