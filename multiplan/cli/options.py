"""Shared options, error mapping and progress for the commands (one definition each).

Exit codes (SPEC §10): 0 done; 1 done with conflicts at or above ``--fail-on``;
2 bad usage or bad input (one clear line, no traceback); 3 an internal error (one
line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from multiplan.dburl import mask
from multiplan.errors import InputError

if TYPE_CHECKING:
    from multiplan.outputs import OutputFolder
    from multiplan.progress import Progress
    from multiplan.specs import Project

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


class InputFailure(click.ClickException):
    """An :class:`InputError` shown as one line, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:  # noqa: D102 - click's own API
        click.echo(f"Error: {self.format_message()}", err=True)


class InternalFailure(click.ClickException):
    """An unexpected error shown as one line, exit code 3."""

    exit_code = 3

    def show(self, file: Any = None) -> None:  # noqa: D102 - click's own API
        click.echo(f"multiplan: internal error: {self.format_message()}", err=True)


@contextlib.contextmanager
def reporting(debug: bool) -> Iterator[None]:
    """Map library exceptions to exit codes: InputError → 2, anything else → 3."""
    try:
        yield
    except InputError as exc:
        if debug:
            raise
        raise InputFailure(mask(str(exc))) from None
    except (
        click.ClickException,
        click.exceptions.Exit,
        click.Abort,
        KeyboardInterrupt,
    ):
        raise
    except Exception as exc:
        if debug:
            raise
        text = mask(" ".join(str(exc).split())) or type(exc).__name__
        raise InternalFailure(
            f"{type(exc).__name__}: {text}; rerun with --debug to see the traceback"
        ) from None


def configure_logging(verbose: int, quiet: bool) -> None:
    """Set the package's log level from ``-v`` counts and ``-q``; log to stderr."""
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    root = logging.getLogger("multiplan")
    root.setLevel(level)
    if not any(getattr(h, "_multiplan", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_MaskingFormatter("%(levelname)s: %(message)s"))
        handler._multiplan = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # a warning from a library (GDAL, numpy, shapely) is one log line, never raw text
    warnings.showwarning = _warning_to_log


class _MaskingFormatter(logging.Formatter):
    """A formatter that never lets a database password reach the log."""

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then mask any password in it."""
        return mask(super().format(record))


def _warning_to_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    logging.getLogger("multiplan").warning(
        "%s: %s", category.__name__, " ".join(str(message).split())
    )


def _meta() -> dict[str, Any]:
    return click.get_current_context().meta


def is_quiet() -> bool:
    """Return whether ``-q`` was given (before or after the command name)."""
    return bool(_meta().get("multiplan.quiet", False))


def verbosity_options(f: F) -> F:
    """Add ``-v``, ``-q/--quiet`` and ``--debug``; the group and every command take them."""
    f = click.option(
        "--debug", is_flag=True, help="Show the traceback of an internal error."
    )(f)
    f = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress bars and only errors on stderr.",
    )(f)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        help="More log output on stderr (-v info, -vv debug).",
    )(f)


def apply_verbosity(verbose: int, quiet: bool, debug: bool) -> bool:
    """Merge ``-v/-q/--debug`` given before and after the command name; return ``debug``."""
    meta = _meta()
    meta["multiplan.verbose"] = meta.get("multiplan.verbose", 0) + verbose
    meta["multiplan.quiet"] = meta.get("multiplan.quiet", False) or quiet
    meta["multiplan.debug"] = meta.get("multiplan.debug", False) or debug
    configure_logging(meta["multiplan.verbose"], meta["multiplan.quiet"])
    return bool(meta["multiplan.debug"])


def common_options(f: F) -> F:
    """Add ``-v``, ``-q`` and ``--debug`` to a command and map its errors to exit codes."""

    @verbosity_options
    @functools.wraps(f)
    def wrapper(
        *args: Any, verbose: int, quiet: bool, debug: bool, **kwargs: Any
    ) -> Any:
        with reporting(apply_verbosity(verbose, quiet, debug)):
            return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def out_option(
    help_text: str = "Output folder (default: the manifest's out).",
) -> Callable[[F], F]:
    """Return the ``--out DIR`` option."""
    return click.option(
        "--out",
        "out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


force_option = click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty folder that holds no multiplan run (file by file, not as one set).",
)


def workers_option(help_text: str) -> Callable[[F], F]:
    """Return the ``--workers N`` option (default: all cores)."""
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help=help_text,
    )


def lang_option(help_text: str) -> Callable[[F], F]:
    """Return the ``--lang zh|en`` option (Chinese by default)."""
    return click.option(
        "--lang",
        type=click.Choice(["zh", "en"]),
        default="zh",
        show_default=True,
        help=help_text,
    )


tiles_option = click.option(
    "--tiles",
    type=click.Choice(["none", "osm", "tianditu", "gaode"]),
    default="none",
    show_default=True,
    help="Base map under the data when online (tianditu needs TIANDITU_KEY; gaode shifts the data to GCJ-02).",
)

project_argument = click.argument(
    "project_path",
    metavar="PROJECT.toml",
    type=click.Path(dir_okay=False, path_type=Path),
)


def read_project(path: Path) -> Project:
    """Read and validate the manifest (every section)."""
    from multiplan.project import read_project as read

    return read(path)


def output_folder(
    project: Project, out: Path | None, *, force: bool = False
) -> OutputFolder:
    """Return the output folder of a command, not yet opened: ``--out`` or the manifest's."""
    from multiplan.outputs import OutputFolder
    from multiplan.record import input_files

    return OutputFolder(
        out if out is not None else project.out,
        force=force,
        inputs=input_files(project),
    )


def cluster_option(f: F) -> F:
    """Add ``--cluster ADDRESS`` (SPEC §12)."""
    return click.option(
        "--cluster",
        "cluster",
        metavar="ADDRESS",
        default=None,
        help="Run the tiles on a dask cluster: 'local' (a LocalCluster of --workers "
        "processes) or a scheduler's tcp://HOST:PORT whose workers see the same paths. "
        'Needs pip install "multiplan[dask]"; the outputs are identical.',
    )(f)


def scale_options(f: F) -> F:
    """Add ``--tile-size METRES`` and ``--cluster ADDRESS`` (SPEC §12)."""
    f = cluster_option(f)
    return click.option(
        "--tile-size",
        "tile_size",
        type=click.FloatRange(min=0),
        default=None,
        metavar="METRES",
        help="Cut the work into square tiles of this size by where each A feature "
        "lies (default: chosen from the data; 0: one tile). The outputs are "
        "identical for every size.",
    )(f)


def db_option(f: F) -> F:
    """Add the ``--db URL`` option: also write the outputs as PostGIS tables."""
    return click.option(
        "--db",
        "db",
        metavar="URL",
        default=None,
        help="Also write the outputs as PostGIS tables, in one transaction: "
        "postgresql://USER@HOST:PORT/DB?schema=NAME (default: the manifest's "
        "[project] db; schema 'multiplan'). The password comes from PGPASSWORD "
        "or ~/.pgpass.",
    )(f)


def database(project: Project, db: str | None) -> str | None:
    """Return the database a command writes to (``--db``, else the manifest's), checked.

    Raises
    ------
    DatabaseError
        When it is no PostgreSQL URL, cannot be reached, has no PostGIS or does
        not let the user create tables in the schema: before any work is done.
    """
    from multiplan.dburl import is_database
    from multiplan.pgwrite import preflight
    from multiplan.postgis import DatabaseError, parse_database

    url = db or project.db
    if url is None:
        return None
    if not is_database(url):
        raise DatabaseError(
            "--db must be a postgresql:// URL",
            path=mask(url),
            hint="e.g. --db postgresql://planner@localhost:5432/onemap?schema=multiplan",
        )
    preflight(parse_database(url))
    return url


def echo(text: str) -> None:
    """Write a line to stderr unless ``-q``."""
    if not is_quiet():
        click.echo(text, err=True)


def wrote(files: Sequence[Path]) -> None:
    """Say which files were written, and where (every file by name)."""
    if files:
        echo(f"wrote {', '.join(f.name for f in files)} in {files[0].parent}")


@contextlib.contextmanager
def stage_progress() -> Iterator[Progress]:
    """Yield a ``progress(stage, done, total, item)`` drawing one bar per stage on stderr.

    Nothing is drawn with --quiet or when stderr is not a terminal.
    """
    if is_quiet() or not sys.stderr.isatty():
        yield lambda _stage, _done, _total, _item: None
        return
    state: dict[str, Any] = {"stage": None, "bar": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].update(state["bar"].length - state["bar"].pos)
            state["bar"].render_finish()
            state["bar"] = None

    def progress(stage: str, done: int, total: int, item: str) -> None:
        if stage != state["stage"]:
            close()
            state["stage"] = stage
            state["bar"] = click.progressbar(
                length=max(total, 1),
                label=f"{stage:<9}",
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda s: s,
            )
        bar = state["bar"]
        bar.current_item = item
        bar.update(done - bar.pos)
        bar.render_progress()

    try:
        yield progress
    finally:
        close()
