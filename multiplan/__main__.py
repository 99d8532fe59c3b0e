"""``python -m multiplan``: the command line (the console script runs this in a child process)."""

from __future__ import annotations

from multiplan.supervise import run

if __name__ == "__main__":
    run()
