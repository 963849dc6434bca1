"""Which artifact to recommend on each device: the fastest that passed its verdict, with its evidence.

A row's headline figures (its latency at the smallest batch, its best throughput) are what the ranking and the
report's summary both read.
"""

from __future__ import annotations

from ...errors import UsageError

RECOMMEND_BY = ("latency", "throughput")


def headline(row: dict) -> tuple[dict | None, dict | None]:
    """(latency entry at the smallest batch, entry with the best throughput): host clock, as a user sees it,
    or a Triton client's (the smallest batch at the fewest requests in flight)."""
    entries = [e for e in (row.get("bench") or {}).get("batches", []) if e.get("clock") in ("host", "client")]
    if not entries:
        return None, None
    return min(entries, key=lambda e: (e["batch"], e.get("concurrency", 1))), max(entries, key=lambda e: e["fps"])


def _speed(row: dict, by: str) -> tuple[int, float] | None:
    """(batch, value) a row is ranked by: p50 ms at batch 1 for latency, the best images/s for throughput (host
    clock, as a user sees it); None where the bench did not measure it."""
    latency, best = headline(row)
    if by == "throughput":
        return (best["batch"], best["fps"]) if best else None
    return (1, latency["p50"]) if latency and latency["batch"] == 1 else None


def recommend(rows: list[dict], by: str = "latency") -> list[dict]:
    """Per device, the fastest artifact that passed its parity verdict (by RECOMMEND_BY), with its evidence: the
    row's parity and bench sections. The reference is not a candidate; a device where none passed has no entry."""
    if by not in RECOMMEND_BY:
        raise UsageError(f"the recommended artifact is chosen by {' or '.join(RECOMMEND_BY)}, not {by!r}")
    chosen: dict[str, tuple[float, dict]] = {}
    for row in rows:
        speed = _speed(row, by) if row["status"] == "pass" else None
        if speed is None:
            continue
        rank = speed[1] if by == "latency" else -speed[1]
        if row["device"] not in chosen or rank < chosen[row["device"]][0]:
            chosen[row["device"]] = (rank, {"device": row["device"], "by": by, "batch": speed[0], "value": speed[1],
                                            **{key: row.get(key) for key in ("artifact", "format", "precision",
                                                                             "backend", "spec", "parity", "bench")}})
    return [entry for _, entry in chosen.values()]


def describe_recommended(entry: dict) -> str:
    """What is recommended on a device, by which measure, with the parity evidence, in one line of plain text."""
    measure = (f"p50 {entry['value']:.2f} ms at batch 1" if entry["by"] == "latency"
               else f"{entry['value']:.1f} images/s at batch {entry['batch']}")
    agreement = (entry.get("parity") or {}).get("top1_agreement")
    evidence = f", top-1 agreement {100 * agreement:.2f}%" if agreement is not None else ""
    return (f"on {entry['device']} (the fastest by {entry['by']} that passed parity): {entry['artifact']} "
            f"({entry['format']} {entry['precision']}, {entry['backend']}), {measure}{evidence}")
