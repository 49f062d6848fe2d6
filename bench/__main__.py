"""``python -m bench``: the load test, exactly as ``hes bench`` (same options, output, exit codes).

The one import upward in the layering (``bench.__main__ -> app.bench``, an ignored import of
the layers contract in pyproject.toml): the command and its options live in ``app/bench.py``.
"""

from __future__ import annotations

import typer

from app.bench import bench_command


def main() -> None:
    runner = typer.Typer(add_completion=False)
    runner.command()(bench_command)
    runner(prog_name="python -m bench")


if __name__ == "__main__":
    main()
