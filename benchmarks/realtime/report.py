"""The results: where the product's time went, the Markdown table and ratios, written atomically."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from statistics import median

from benchmarks.client import parse_time
from benchmarks.realtime.client import BATCH, Phase
from benchmarks.services import ROOT

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "realtime.md"
TARGET_LATENCY_RATIO = 3.0  # one client: product p50 <= 3x the naive server's
TARGET_THROUGHPUT_RATIO = 1.5  # 32 clients: product throughput >= 1.5x the naive server's


# ----------------------------------------------------------------------------- where the product's time went
def breakdown(phase: Phase, jobs: dict[str, dict]) -> str:
    rows = [jobs[i] for i in phase.job_ids if i in jobs and jobs[i]["status"] == "done"]
    if not rows:
        return "n/a"
    queue = [parse_time(r["started_at"]) - parse_time(r["queued_at"]) for r in rows]
    run = [parse_time(r["finished_at"]) - parse_time(r["started_at"]) for r in rows]
    e2e = median(phase.latencies) if phase.latencies else float("nan")
    server = median(q + r for q, r in zip(queue, run, strict=True))
    batch_sizes = Counter(r["started_at"] for r in rows)
    mean_batch = len(rows) / len(batch_sizes)
    return (
        f"median queue wait {median(queue) * 1000:.1f} ms, batch run {median(run) * 1000:.1f} ms, "
        f"web + upload + push {max(e2e - server, 0) * 1000:.1f} ms (client p50 minus queued->finished); "
        f"mean batch {mean_batch:.1f} jobs ({len(batch_sizes)} batches)"
    )


# ----------------------------------------------------------------------------- where the cores went
CPU_ORDER = ("product-web", "worker", "naive-web", "postgres", "redis", "client", "other")


def cpu_table(phases: list[Phase], cpus: int) -> list[str]:
    """CPU milliseconds per answered image by component (benchmarks.realtime.cpu), the total, the
    share of the cores left idle, and the throughput those milliseconds allow on ``cpus`` cores."""
    measured = [ph for ph in phases if ph.cpu and ph.images]
    if not measured:
        return ["(not measured: no /proc on this machine)"]
    present = [c for c in CPU_ORDER if any(ph.cpu.get(c, 0.0) > 0 for ph in measured)]
    lines = [
        "| clients | server | " + " | ".join(present) + " | total | cores idle | ceiling /s |",
        "|---:|---|" + "---:|" * (len(present) + 3),
    ]
    for ph in measured:
        per_image = {c: ph.cpu.get(c, 0.0) * 1000 / ph.images for c in present}
        total = sum(per_image.values())
        idle = ph.cpu.get("idle", 0.0) / (ph.wall * cpus) if ph.wall else float("nan")
        cells = " | ".join(f"{per_image[c]:.1f}" for c in present)
        ceiling = cpus * 1000 / total if total else float("nan")
        lines.append(f"| {ph.clients} | {ph.server} | {cells} | {total:.1f} | {idle:.0%} | {ceiling:.0f} |")
    return lines


# ----------------------------------------------------------------------------- report
def render(args, meta: list[str], phases: list[Phase], jobs: dict[str, dict] | None, lost: int | None, done: bool):
    lines = ["# Real time under load: product vs naive in-request server", ""]
    if not done:
        lines += ["**Incomplete run** (interrupted or still running): the phases below are what it measured.", ""]
    lines += [f"- {m}" for m in meta] + [""]
    lines += [
        "| clients | server | ok | errors | p50 ms | p95 ms | p99 ms | images/s | load avg (start → end) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ph in phases:
        errors = sum(ph.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in ph.errors.most_common(3))})" if errors else ""
        lines.append(
            f"| {ph.clients} | {ph.server} | {ph.ok} | {errors}{detail} | {ph.p(50):.1f} | {ph.p(95):.1f} | "
            f"{ph.p(99):.1f} | {ph.throughput:.1f} | {ph.load_start} → {ph.load_end} |"
        )
    batched = [ph for ph in phases if ph.per_request > 1]
    if batched:
        lines += [
            "",
            f"{BATCH}: {batched[0].per_request} images per request (`POST /api/v1/classifications/batch/?wait=`);"
            " ok, errors and latencies count requests, images/s counts images.",
        ]
    lines += ["", "## Ratios (product / naive)", ""]
    by = {(p.server, p.clients): p for p in phases}
    for clients, server in ((c, s) for c in args.concurrency for s in ("product", "product+maps", BATCH)):
        prod, naive = by.get((server, clients)), by.get(("naive", clients))
        if not (prod and naive and prod.ok and naive.ok):
            continue
        lat, thr = prod.p(50) / naive.p(50), prod.throughput / naive.throughput
        notes = []
        if clients == 1:
            notes.append(
                f"target p50 ratio ≤ {TARGET_LATENCY_RATIO:g}: {'met' if lat <= TARGET_LATENCY_RATIO else 'missed'}"
            )
        if clients == 32:
            verdict = "met" if thr >= TARGET_THROUGHPUT_RATIO else "missed"
            notes.append(f"target throughput ratio ≥ {TARGET_THROUGHPUT_RATIO:g}: {verdict}")
        lines.append(
            f"- {clients} client(s), {server}: p50 {lat:.2f}x, p95 {prod.p(95) / naive.p(95):.2f}x, "
            f"throughput {thr:.2f}x" + (f" ({'; '.join(notes)})" if notes else "")
        )
        if len(prod.rounds) > 1 and len(prod.rounds) == len(naive.rounds):
            pairs = list(zip(prod.rounds, naive.rounds, strict=True))
            lat_r = ", ".join(f"{a.p(50) / b.p(50):.2f}" for a, b in pairs if a.ok and b.ok)
            thr_r = ", ".join(f"{a.throughput / b.throughput:.2f}" for a, b in pairs if a.ok and b.ok)
            lines.append(f"  per round: p50 ratio {lat_r}; throughput ratio {thr_r}")
    if jobs is not None:
        lines += ["", "## Where the product's time went (from the jobs' timestamps)", ""]
        for ph in phases:
            if ph.server.startswith("product"):
                lines.append(f"- {ph.clients} client(s), {ph.server}: {breakdown(ph, jobs)}")
                if ph.maps_s is not None:
                    lines.append(
                        f"  (the maps of the last answers were all drawn {ph.maps_s:.1f} s after the phase ended)"
                    )
    if any(ph.cpu for ph in phases):
        lines += [
            "",
            "## Where the cores went (CPU ms per answered image, from /proc)",
            "",
            "Each component's user + system time during the phase, over the images answered; ceiling: the"
            f" throughput that total allows on {os.cpu_count()} cores with nothing idle.",
            "",
            *cpu_table(phases, os.cpu_count() or 1),
        ]
    if lost is not None:
        lines += ["", f"**Lost product jobs: {lost}** (accepted - done, checked against the API after the run)."]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
