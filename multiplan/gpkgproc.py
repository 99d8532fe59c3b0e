"""A GeoPackage layer written by a process of its own, from an Arrow stream.

GDAL's Arrow writer (``pyogrio.write_arrow``) holds Python's global lock for the
whole of each batch, so a GeoPackage written in a thread beside a check's
summaries slows every line of Python they run (280 000 pieces: about 1.1 s of
GDAL). The write ahead of a check's pieces in memory
(:class:`multiplan.writeahead.WriteAhead`) therefore hands the record batches
over a pipe to a child process that writes them with the same call, the same
batches and the same pinned time: the same file, byte for byte, as a write in
the check's own process.

The child is run as ``python -m multiplan.gpkgproc PATH OPTIONS`` with the Arrow
IPC stream on its standard input. Any warning from GDAL makes it fail; the
caller then writes in its own process, where warnings are judged as usual.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    import pyarrow as pa

GPKG_TIMESTAMP = "2000-01-01T00:00:00.000Z"
"""The last-change time written into every GeoPackage (SPEC: same inputs, same files)."""


def write_apart(
    path: Path,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    options: dict[str, Any],
    *,
    log: Path,
) -> None:
    """Write record batches as a GeoPackage layer in a child process; wait for it.

    Parameters
    ----------
    path
        The GeoPackage to create.
    schema, batches
        The layer's Arrow schema and its batches, in order (each batch is one
        transaction of GDAL's, so the same batches give the same file).
    options
        Keyword arguments of ``pyogrio.write_arrow`` (JSON values only).
    log
        Where the child's standard error goes (a file: a pipe left unread
        could fill and stop the child).

    Raises
    ------
    RuntimeError
        When the child fails (its message in the error), or the stream breaks.
    """
    import pyarrow as pa

    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multiplan.gpkgproc",
                str(path),
                json.dumps(options),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert proc.stdin is not None
        try:
            with pa.ipc.new_stream(proc.stdin, schema) as sink:
                for batch in batches:
                    sink.write_batch(batch)
            proc.stdin.close()
        except OSError as exc:  # a broken pipe: the child died, its log says why
            proc.wait()
            raise RuntimeError(_said(log) or str(exc)) from exc
        if proc.wait() != 0:
            raise RuntimeError(_said(log) or f"exit {proc.returncode}")
    finally:
        if proc.poll() is None:  # cancelled or failed half-way
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]


def _said(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def main(argv: Sequence[str]) -> int:
    """Write the Arrow stream on standard input to ``argv[0]``; options in ``argv[1]``."""
    import pyarrow as pa
    import pyogrio

    path, options = argv[0], json.loads(argv[1])
    warnings.simplefilter("error")  # a GDAL warning fails the write ahead
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    with pa.ipc.open_stream(sys.stdin.buffer) as reader:
        pyogrio.write_arrow(reader, path, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
