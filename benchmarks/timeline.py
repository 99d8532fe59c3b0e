"""Timeline: a command's resident memory over time, beside its log lines.

    python benchmarks/timeline.py OUT.txt -- python -m multiplan -v check P/project.toml --no-map --out DIR

Runs the command (with ``MULTIPLAN_SUPERVISED=1``, so that ``multiplan`` runs in
this child itself rather than in a supervised grandchild), samples its VmRSS from
``/proc`` every ``--every`` seconds, and writes OUT.txt: one line per sample
(``RSS`` in MB) and per line of the command's standard error (``LOG``), in time
order. Prints the wall time and the peak, and when it was reached: which stage a
peak belongs to is read off the log lines around it. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def rss_mb(pid: int) -> int | None:
    """Return the resident memory of process ``pid`` in MB, or ``None`` once it is gone."""
    try:
        with Path(f"/proc/{pid}/status").open(encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def main() -> int:
    """Run the command, write its timeline, print its wall time and peak; return its exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the timeline file to write")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    t0 = time.perf_counter()
    env = dict(os.environ, MULTIPLAN_SUPERVISED="1")
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    samples: list[tuple[float, int]] = []

    def watch() -> None:
        while proc.poll() is None:
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.perf_counter() - t0, mb))
            time.sleep(args.every)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert proc.stderr is not None
    logs = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stderr]
    code = proc.wait()
    watcher.join()
    wall = time.perf_counter() - t0
    events = sorted(
        [(t, f"RSS {mb}") for t, mb in samples]
        + [(t, f"LOG {text}") for t, text in logs]
    )
    args.out.write_text(
        "".join(f"{t:8.2f} {what}\n" for t, what in events), encoding="utf-8"
    )
    if samples:
        at, peak = max(samples, key=lambda s: s[1])
        print(f"wall {wall:.1f} s, peak {peak:,} MB at {at:.1f} s; exit {code}")
    else:
        print(f"wall {wall:.1f} s, no sample; exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
