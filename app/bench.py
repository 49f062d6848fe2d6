"""``hes bench`` (also ``python -m bench``): the load test of issue 5 (bench/harness.py).

The harness lives in the ``bench`` package next to the figures it writes; this module only
parses the options, picks the sizes (full, ``--scale``d or ``--smoke``) and writes
results.json/.md.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]


def bench_command(
    out: Annotated[
        Path, typer.Option(help="results JSON (the markdown table goes next to it as .md)")
    ] = ROOT / "bench" / "results.json",
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="throughput, peers, gprs, buses, storage, security, service (repeat; default: all)"
        ),
    ] = None,
    scale: Annotated[
        float, typer.Option(min=0.0001, max=1.0, help="shrink every meter count by this factor")
    ] = 1.0,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="tiny counts for CI (well under a minute)")
    ] = False,
    meters: Annotated[int | None, typer.Option(help="scenario 1 meter count")] = None,
    gprs_meters: Annotated[int | None, typer.Option(help="scenario 3 meter count")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="scenario 1 sessions in flight")
    ] = None,
    gprs_concurrency: Annotated[
        int | None, typer.Option(min=1, help="scenario 3 sessions in flight")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="collector processes (hes collect)")
    ] = None,
    peer_sample: Annotated[int | None, typer.Option(min=1, help="scenario 2 sample")] = None,
    storage_meters: Annotated[
        int | None, typer.Option(min=1, help="scenario 5 meters ingested on each backend")
    ] = None,
    report_meters: Annotated[
        int | None, typer.Option(min=1, help="scenario 5 meters of the day hes report reads")
    ] = None,
    collect_timeout: Annotated[
        float | None, typer.Option(min=1.0, help="kill a collector run after this many s")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="databases, inventories, logs (default: a temp dir)")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep/--replace", help="keep earlier figures of scenarios not run")
    ] = True,
) -> None:
    """Run the load test (simulator fleet and collector as separate processes) and write
    the figures to JSON and a markdown table. Stops by itself; nothing is asserted."""
    # imported to register their scenarios: 7 (the service) and 5 (storage)
    import bench.service_load
    import bench.storage_bench  # noqa: F401
    from bench.harness import SCENARIOS, SMOKE, Sizes, run_bench, write_results

    names = scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        typer.echo(
            f"hes bench: unknown scenario {unknown[0]!r} (use {', '.join(SCENARIOS)})", err=True
        )
        raise typer.Exit(2)
    sizes = replace(SMOKE) if smoke else Sizes().scaled(scale) if scale != 1.0 else Sizes()
    for field_name, value in (
        ("meters", meters), ("gprs_meters", gprs_meters), ("concurrency", concurrency),
        ("gprs_concurrency", gprs_concurrency), ("workers", workers),
        ("peer_sample", peer_sample), ("collect_timeout_s", collect_timeout),
        ("storage_meters", storage_meters), ("storage_report_meters", report_meters),
    ):  # fmt: skip
        if value is not None:
            setattr(sizes, field_name, value)
    if peer_sample is not None:
        sizes.peer_concurrency = min(sizes.peer_concurrency, peer_sample)
    previous = None
    if keep and out.exists():
        try:
            previous = json.loads(out.read_text())
        except (OSError, ValueError):
            previous = None
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="hes-bench-") as tmp:
            result = run_bench(
                names, sizes, Path(tmp), previous=previous, log=lambda m: typer.echo(m, err=True)
            )
    else:
        result = run_bench(
            names, sizes, workdir, previous=previous, log=lambda m: typer.echo(m, err=True)
        )
    md = write_results(result, out)
    typer.echo(json.dumps({"results": str(out), "table": str(md)}))
