"""What the consumers' journals say about one run: completions, losses, duplicates, redelivery.

A job is lost when no journal has it done; a duplicate when two completions of it are written
(the killed node finished it but died before its ack reached the broker, so another node did
it again: at-least-once delivery). The jobs the killed node held are those it claimed and did
not finish; their redelivery time is from the kill to the first claim of each by another node.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from bench.brokers.common import JournalRead


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def tally(
    journals: list[JournalRead], jobs: int, victim: int | None, kill_t: float | None
) -> dict[str, Any]:
    """Figures of one run; ``victim`` is the index of the killed consumer (or None)."""
    done = Counter(job for j in journals for job, _t in j.done or ())
    last_done = max((t for j in journals for _job, t in j.done or ()), default=None)
    survivors = [j for n, j in enumerate(journals) if n != victim]
    redelivered = {job for j in journals for job, _t, again in j.claims or () if again}
    cpu = [j.cpu_s for j in survivors]
    out: dict[str, Any] = {
        "completed": sum(1 for job in range(jobs) if done[job]),
        "lost": sum(1 for job in range(jobs) if not done[job]),
        "duplicates": sum(1 for count in done.values() if count > 1),
        "unknown_jobs": sum(1 for job in done if not 0 <= job < jobs),
        "last_done_t": last_done,
        "consumer_cpu_s": None if None in cpu else sum(c for c in cpu if c is not None),
        "per_consumer_done": [len(j.done or ()) for j in journals],
        # Jobs the broker delivered more than once (its own flag: NATS num_delivered > 1,
        # AMQP redelivered, PostgreSQL attempts > 1).
        "redelivered_flagged": len(redelivered),
        "done_twice_never_redelivered": sum(
            1 for job, count in done.items() if count > 1 and job not in redelivered
        ),
    }
    if victim is None or kill_t is None:
        return out
    dead = journals[victim]
    # What it held when it was lost (a hung node resumed later goes on writing).
    held = {job for job, t, _r in dead.claims or () if t < kill_t} - {
        job for job, t in dead.done or () if t < kill_t
    }
    first_claim: dict[int, float] = {}
    for journal in survivors:
        for job, t, _again in journal.claims or ():
            if job in held and t >= kill_t and t < first_claim.get(job, float("inf")):
                first_claim[job] = t
    delays = sorted(first_claim[job] - kill_t for job in first_claim)
    out.update(
        held_at_kill=len(held),
        held_claimed_again=len(first_claim),
        held_done_by_survivor=len(held & {job for j in survivors for job, _t in j.done or ()}),
        redelivery_first_s=_round(delays[0] if delays else None),
        redelivery_median_s=_round(statistics.median(delays) if delays else None),
        redelivery_last_s=_round(delays[-1] if delays else None),
    )
    return out
