"""The ``multiplan`` command line: thin shells over the library, one module per command.

Each command parses its options, makes one library call inside
:func:`~multiplan.cli.options.reporting` (which maps errors to exit codes), says
what it wrote on stderr and sets the exit code.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import click

from multiplan.cli.check import check_cmd, map_cmd
from multiplan.cli.describe import layers_cmd, rules_cmd
from multiplan.cli.diff import diff_cmd
from multiplan.cli.fuse import fuse_cmd
from multiplan.cli.options import apply_verbosity, verbosity_options
from multiplan.cli.site import site_cmd
from multiplan.cli.yield_ import yield_cmd
from multiplan.version import __version__

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="multiplan")
@verbosity_options
def main(verbose: int, quiet: bool, debug: bool) -> None:
    """Put a district's plans on one map (一张图) and check them against each other.

    -v, -q and --debug may come before or after the command name.

    \b
    Example:
        multiplan check layers/xinbei/project.toml
        multiplan -v fuse layers/xinbei/project.toml
        multiplan layers layers/xinbei/project.toml
    """
    if apply_verbosity(verbose, quiet, debug):
        import faulthandler

        faulthandler.enable()  # with --debug a native crash shows the Python stack


for _command in (
    check_cmd,
    map_cmd,
    layers_cmd,
    rules_cmd,
    fuse_cmd,
    diff_cmd,
    site_cmd,
    yield_cmd,
):
    main.add_command(_command)

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
    the user sends (Ctrl-C, ``kill``) are passed on to the child.
    """
    if os.environ.get(_CHILD) or sys.platform == "win32":
        if os.environ.get("MULTIPLAN_TEST_SEGFAULT"):  # test hook: crash as GEOS would
            import faulthandler

            faulthandler._sigsegv()  # type: ignore[attr-defined]
        main(prog_name="multiplan")
        return
    env = {
        **os.environ,
        _CHILD: "1",
        "MULTIPLAN_COMMAND": shlex.join(["multiplan", *sys.argv[1:]]),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "multiplan", *sys.argv[1:]], env=env
    )

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    if code < 0:
        signum = -code
        if signum in _CRASHES:
            click.echo(
                f"multiplan: internal error: the process crashed with {_CRASHES[signal.Signals(signum)]} "
                "in native code; rerun with --debug to see where",
                err=True,
            )
            sys.exit(3)
        sys.exit(128 + signum)
    sys.exit(code)


__all__ = ["main", "run"]
