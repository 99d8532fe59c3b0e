"""The ``multiplan`` command line: thin shells over the library, one module per command.

Each command parses its options, makes one library call inside
:func:`~multiplan.cli.options.reporting` (which maps errors to exit codes), says
what it wrote on stderr and sets the exit code.
"""

from __future__ import annotations

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

__all__ = ["main"]
