"""Loading the read-side benchmark's history into a fresh embedded store, as fast as two cores allow.

Chunks from :class:`read_scale_data.Generator` go in with ``EmbeddedStore.insert_arrow``
(one insert per chunk, like the writer's path); the next chunk is generated and priced
while the previous one is inserted. Beside the usage events the store gets what the
other readers read: the emitters' ledger (``reconcile``), dead letters for 0.05 % of
events (``reconcile``, the cookbook), and the self-hosted models' GPU
deployments with a sample every 15 s (the GPU views, the advisor), which grow with
time, not with events.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from decimal import Decimal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from read_scale_data import Generator, timestamps
from read_scale_keys import SELF_HOSTED, hex_ids

from spendstream.agents.stages import process
from spendstream.batches import DeadLetter, SourceRecord
from spendstream.pricing import Pricer
from spendstream.pricing.deployments import Deployment
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.rows import dead_letter_table, deployment_table

DEAD_LETTER_SHARE = 0.0005
GPU_SAMPLE_S = 15


@dataclass(frozen=True, slots=True)
class LoadStats:
    events: int            # distinct events (what FINAL counts)
    requests: int
    retries: int
    duplicates: int        # rows inserted a second time
    rows_inserted: int
    dead_letters: int
    gpu_samples: int
    ledger_rows: int
    chunks: int
    generate_s: float  # making the chunks in the main thread (overlapping the inserts), pricing included
    price_s: float     # of which Pricer.price_columns
    insert_s: float    # inserts (usage events, ledger, dead letters), in the insert thread
    wall_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows_inserted / self.wall_s

    def as_dict(self) -> dict:
        return asdict(self) | {"rows_per_s": round(self.rows_per_s),
                               "insert_rows_per_s": round(self.rows_inserted / self.insert_s)}


def load(store: EmbeddedStore, generator: Generator, *, chunk_rows: int, log=print) -> LoadStats:
    """Insert ``generator``'s events (and their duplicates, ledger, dead letters), then the GPU history."""
    rng = np.random.default_rng(generator.rng.integers(2**32))
    started = time.perf_counter()
    generate_s = price_s = insert_s = 0.0
    inserted = duplicates = dead = ledger_rows = chunks = retries = requests = 0
    pending: pa.Table | None = None  # duplicates of the previous chunk, re-delivered with this one
    in_flight = None

    def insert(rows: pa.Table, ledger: pa.Table | None = None, letters: pa.Table | None = None) -> float:
        # all in the insert thread: the store takes one statement at a time
        began = time.perf_counter()
        store.insert_arrow("usage_events", rows)
        if ledger is not None:
            store.insert_arrow("emitter_ledger", ledger)
        if letters is not None and letters.num_rows:
            store.insert_arrow("dead_letters", letters)
        return time.perf_counter() - began

    with ThreadPoolExecutor(max_workers=1) as pool:
        began = time.perf_counter()
        for chunk in generator.chunks(chunk_rows):
            n = chunk.rows.num_rows
            copies = chunk.rows.take(pa.array(np.sort(rng.choice(n, round(n * generator.shape.duplicate_share),
                                                                 replace=False))))
            rows = chunk.rows if pending is None else pa.concat_tables([chunk.rows, pending])
            letters = _dead_letters(rng, chunk.rows, round(n * DEAD_LETTER_SHARE), generator.pricer)
            generate_s += time.perf_counter() - began
            price_s += chunk.price_s
            if in_flight is not None:
                insert_s += in_flight.result()
            ledger = _ledger(chunk.rows, emitter_id=f"read-scale-{chunks}")
            in_flight = pool.submit(insert, rows, ledger, letters)
            inserted += rows.num_rows
            duplicates += 0 if pending is None else pending.num_rows
            dead += letters.num_rows
            ledger_rows += ledger.num_rows
            requests, retries, chunks = requests + chunk.requests, retries + chunk.retries, chunks + 1
            pending = copies
            log(f"  chunk {chunks}: {inserted:,} rows made and handed to the insert, "
                f"{time.perf_counter() - started:.0f} s")
            began = time.perf_counter()
        insert_s += in_flight.result() if in_flight is not None else 0.0
    if pending is not None:
        insert_s += insert(pending)
        inserted += pending.num_rows
        duplicates += pending.num_rows
    wall_s = time.perf_counter() - started
    samples = _gpu_history(store, rng, generator)
    return LoadStats(generator.events, requests, retries, duplicates, inserted, dead, samples, ledger_rows, chunks,
                     round(generate_s, 2), round(price_s, 2), round(insert_s, 2), round(wall_s, 2))


def _ledger(rows: pa.Table, *, emitter_id: str) -> pa.Table:
    """What one emitter would report for ``rows``: its distinct events per service and minute, exactly."""
    counts = pa.table({"service": rows["service"], "minute": pc.floor_temporal(rows["ts"], unit="minute")}).group_by(
        ["service", "minute"]).aggregate([([], "count_all")])
    return pa.table({
        "emitter_id": pa.repeat(pa.scalar(emitter_id), counts.num_rows),
        "service": counts["service"], "minute": counts["minute"],
        "events": counts["count_all"].cast(pa.uint64()), "exact": pa.repeat(pa.scalar(True), counts.num_rows),
        "reported_at": pc.add(counts["minute"], pa.scalar(timedelta(seconds=90))),
    })


def _dead_letters(rng: np.random.Generator, rows: pa.Table, n: int, pricer: Pricer) -> pa.Table:
    """``n`` malformed events beside ``rows``, dead-lettered with the reasons the stages give them."""
    picked = rows.take(pa.array(rng.choice(rows.num_rows, n, replace=False))).select(
        ["ts", "service", "provider", "model", "source_partition"]).to_pylist()
    letters = []
    for k, row in enumerate(picked):
        event = {"event_id": hex_ids(rng, 1)[0].as_py(), "ts": row["ts"].isoformat(), "service": row["service"],
                 "provider": row["provider"], "model": row["model"], "input_tokens": 1_000}
        if k % 2:
            event["input_tokens"] = "1k"  # a token count as text
        else:
            del event["provider"]
        raw = orjson.dumps(event)
        # offsets far above the usage rows' own, so no two records share coordinates
        source = SourceRecord("usage", row["source_partition"], 2**40 + int(rng.integers(2**40)), raw)
        (letter,) = process([source], pricer).dead_letters
        letters.append(DeadLetter(source, letter.item_index, letter.reason, raw, letter.event_id))
    if not letters:
        return dead_letter_table([])
    table = dead_letter_table(letters)
    arrived = [r["ts"] + timedelta(seconds=2) for r in picked]  # received when it was sent, not now
    return table.set_column(table.schema.get_field_index("received_at"), "received_at",
                            pa.array(arrived, table.schema.field("received_at").type))


def _gpu_history(store: EmbeddedStore, rng: np.random.Generator, generator: Generator) -> int:
    """Each self-hosted model's deployment and a GPU sample every GPU_SAMPLE_S seconds over the period."""
    deployments = [Deployment(name=name, gpu_type="H100-80GB", gpu_count=count, usd_per_gpu_hour=Decimal("2.49"),
                              pricing="reserved", idle_below_tokens_per_s=20)
                   for (_, _, name), count in zip(SELF_HOSTED, (8, 4, 1), strict=True)]
    store.insert_arrow("gpu_deployments", deployment_table(deployments, now=generator.start))
    start_ms = int(generator.start.timestamp() * 1000)
    ends = start_ms + 1000 * GPU_SAMPLE_S * np.arange(1, generator.shape.days * 86_400 // GPU_SAMPLE_S + 1)
    hour = (ends // 3_600_000) % 24
    load_share = np.clip(0.15 + 0.85 * np.exp(-(((hour - 14.5) / 4.5) ** 2)), 0, 1)
    total = 0
    for (_, model, name), capacity in zip(SELF_HOSTED, (4_000, 2_500, 900), strict=True):
        n = len(ends)
        busy = load_share * rng.uniform(0.6, 1.2, n) * np.where(rng.random(n) < 0.05, 0.0, 1.0)  # idle spells
        prompt = (busy * capacity * 3 * GPU_SAMPLE_S).astype(np.int64)
        generation = (busy * capacity * GPU_SAMPLE_S).astype(np.int64)
        table = pa.table({
            "sample_id": hex_ids(rng, n), "ts": timestamps(ends), "interval_s": pa.repeat(float(GPU_SAMPLE_S), n),
            "deployment": pa.repeat(pa.scalar(name), n), "engine": pa.repeat(pa.scalar("vllm"), n),
            "engine_version": pa.repeat(pa.scalar("0.6.3"), n), "model": pa.repeat(pa.scalar(model), n),
            "gpu_type": pa.repeat(pa.scalar("H100-80GB"), n),
            "prompt_tokens_delta": pa.array(prompt, pa.uint64()),
            "generation_tokens_delta": pa.array(generation, pa.uint64()),
            "prompt_tokens_per_s": pa.array(prompt / GPU_SAMPLE_S), "generation_tokens_per_s":
                pa.array(generation / GPU_SAMPLE_S),
            "kv_cache_utilization": pa.array(np.clip(busy * 0.8, 0, 1)), "running_requests": pa.array(busy * 32),
            "waiting_requests": pa.array(np.maximum(busy - 0.9, 0) * 50),
            "gpu_utilization": pa.array(np.clip(busy * 0.95, 0, 1)),
            "gpu_power_w": pa.array(150 + busy * 500), "ingested_at": timestamps(ends + 2_000),
        })
        store.insert_arrow("gpu_samples", table)
        total += n
    return total


def settle(store: EmbeddedStore, *, timeout_s: float, log=print) -> dict:
    """Wait until ClickHouse has no merge running (as history at rest would be), at most ``timeout_s``.

    Nothing is forced (no OPTIMIZE): duplicates collapse only where background merges
    reached them, as in a live store.
    """
    began = time.perf_counter()
    quiet = 0
    while time.perf_counter() - began < timeout_s:
        running = store.query("SELECT count() FROM system.merges").scalar()
        quiet = quiet + 1 if running == 0 else 0
        if quiet >= 3:
            break
        time.sleep(2)
    parts = store.query("SELECT count() FROM system.parts WHERE active AND table = 'usage_events'").scalar()
    waited = round(time.perf_counter() - began, 1)
    log(f"  {'merges settled' if quiet >= 3 else 'still merging, timed out'} after {waited} s; "
        f"usage_events has {parts} active parts")
    return {"waited_s": waited, "settled": quiet >= 3, "usage_events_parts": int(parts)}
