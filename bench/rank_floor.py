"""The floor of two exact top-k plans over team × feature × customer, on scratch tables (measured before building).

    PYTHONPATH=. .venv/bin/python bench/rank_floor.py COPY --result RESULT.json --rounds 4 [--build]

Issue 17's slowest reads at 50M rank team × feature × customer keys (cookbook Top spenders, Movers), and their
cost is the keys: nearly one per ``customer_hours`` row (BENCHMARKS.md, s18). Two plans, each timed here on
scratch tables built once from ``customer_hours FINAL`` (``--build``), so these are floors: merged tables, no
watermarks, no ``FINAL`` (its cost is timed apart, on the real table), closed days only (today apart):

- ``names``: the cookbook's grouping by the three names, on the scratch copy of ``customer_hours``;
- ``id``: the same rows with a stored ``key_id`` (UInt64 of the three names and their NULL flags): the ranking
  groups the ids alone, keeps the ``top``-th cost and its ties, then only those ids are grouped by their names
  (a 64-bit collision can only merge two keys' sums: the names' grouping would show it);
- ``ta``: Fagin's threshold over day × key totals: each day's ``n`` largest keys are kept in a table
  (``r19_tops``, what a maintainer would keep); candidates are their union over the range, and a key outside
  every day's list costs at most the sum of the days' ``n``-th values (no cost is negative). The candidates'
  exact sums come from a key-first day table (``r19_kd``, ``ORDER BY (key_id, day)``). The answer is exact when
  the ``top``-th candidate is strictly above that bound; printed per ``n`` with the bound. Movers the same with
  |this − last| <= max(this, last) <= the larger week's sum of ``n``-th values.

Every form's rows are asserted equal to the ``names`` form (for ``ta``, when it says it is exact). ``now`` is the
load's start (the result file's ``started``); weeks here are whole UTC days before today (Movers' real weeks start
mid-day: a simplification of the floor, not of the answer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402

KEYS = "team, feature, customer"
KEY_ID = ("sipHash64(isNull(team), ifNull(team, ''), isNull(feature), ifNull(feature, ''), "
          "isNull(customer), ifNull(customer, ''))")
KEYS_DDL = "team LowCardinality(Nullable(String)), feature LowCardinality(Nullable(String)), customer Nullable(String)"
PRICED = "HAVING sum(attempts) > sum(unpriced_attempts)"
MAX_N = 3000  # longest per-day list kept in r19_tops


def build(store: EmbeddedStore, start: datetime) -> None:
    day = f"toDateTime('{start:%Y-%m-%d} 00:00:00', 'UTC')"
    cols = f"hour, {KEYS}, environment, provider, model, cost_usd, attempts, unpriced_attempts"
    for sql in (
        "DROP TABLE IF EXISTS r19_ch", "DROP TABLE IF EXISTS r19_kd", "DROP TABLE IF EXISTS r19_tops",
        f"""CREATE TABLE r19_ch ENGINE = MergeTree ORDER BY (hour, {KEYS}, environment, provider, model)
            SETTINGS allow_nullable_key = 1 AS
            SELECT {cols}, {KEY_ID} AS key_id FROM customer_hours FINAL WHERE hour >= {day}""",
        """CREATE TABLE r19_kd ENGINE = MergeTree ORDER BY (key_id, day) SETTINGS index_granularity = 256 AS
            SELECT toDate(hour) AS day, key_id, any(team) AS team, any(feature) AS feature,
                   any(customer) AS customer, sum(cost_usd) AS cost_usd, sum(attempts) AS attempts,
                   sum(unpriced_attempts) AS unpriced_attempts
            FROM r19_ch GROUP BY day, key_id""",
        f"""CREATE TABLE r19_tops ENGINE = MergeTree ORDER BY (day, rank) AS
            SELECT day, row_number() OVER (PARTITION BY day ORDER BY ifNull(cost_usd, 0) DESC, key_id) AS rank,
                   key_id, ifNull(cost_usd, 0) AS cost_usd
            FROM r19_kd QUALIFY rank <= {MAX_N}""",
        "DROP TABLE IF EXISTS r19_kdr",
        f"""CREATE TABLE r19_kdr (day Date, {KEYS_DDL}, cost_usd Nullable(Decimal(38, 18)), attempts UInt64,
                unpriced_attempts UInt64, version UInt32, key_id UInt64 MATERIALIZED {KEY_ID})
            ENGINE = ReplacingMergeTree(version) ORDER BY (day, {KEYS}) SETTINGS allow_nullable_key = 1""",
        f"INSERT INTO r19_kdr SELECT day, {KEYS}, cost_usd, attempts, unpriced_attempts, 1 FROM r19_kd",
        "OPTIMIZE TABLE r19_ch FINAL", "OPTIMIZE TABLE r19_kd FINAL", "OPTIMIZE TABLE r19_tops FINAL",
        "OPTIMIZE TABLE r19_kdr FINAL",
        # as a maintainer would keep them: versioned, FINAL, a recomputed day in a part of its own in both tables
        "DROP TABLE IF EXISTS r19_kdv", "DROP TABLE IF EXISTS r19_topsv",
        f"""CREATE TABLE r19_kdv (day Date, {KEYS_DDL}, cost_usd Nullable(Decimal(38, 18)), attempts UInt64,
                unpriced_attempts UInt64, version UInt32, key_id UInt64 MATERIALIZED {KEY_ID})
            ENGINE = ReplacingMergeTree(version) ORDER BY (key_id, day, {KEYS})
            SETTINGS allow_nullable_key = 1, index_granularity = 256""",
        f"INSERT INTO r19_kdv SELECT day, {KEYS}, cost_usd, attempts, unpriced_attempts, 1 FROM r19_kd",
        """CREATE TABLE r19_topsv (day Date, keys Array(UInt64), nth Array(Decimal(38, 18)), version UInt32)
            ENGINE = ReplacingMergeTree(version) ORDER BY day""",
        """INSERT INTO r19_topsv SELECT day, groupArray(key_id), groupArray(cost_usd), 1
            FROM (SELECT * FROM r19_tops ORDER BY day, rank) GROUP BY day""",
        "OPTIMIZE TABLE r19_kdv FINAL", "OPTIMIZE TABLE r19_topsv FINAL",
        f"""INSERT INTO r19_kdv SELECT day, {KEYS}, cost_usd, attempts, unpriced_attempts, 2 FROM r19_kd
            WHERE day = (SELECT max(day) FROM r19_kd)""",
        """INSERT INTO r19_topsv SELECT day, keys, nth, 2 FROM r19_topsv
            WHERE day = (SELECT max(day) FROM r19_topsv)""",
        # hours no day row holds (today's, a mid-day range's ends): hour × key, key-first within a day, each hour's list
        "DROP TABLE IF EXISTS r19_kh", "DROP TABLE IF EXISTS r19_htops",
        """CREATE TABLE r19_kh ENGINE = MergeTree ORDER BY (toDate(hour), key_id, hour)
            SETTINGS index_granularity = 256 AS
            SELECT hour, key_id, any(team) AS team, any(feature) AS feature, any(customer) AS customer,
                   sum(cost_usd) AS cost_usd, sum(attempts) AS attempts, sum(unpriced_attempts) AS unpriced_attempts
            FROM r19_ch GROUP BY hour, key_id""",
        f"""CREATE TABLE r19_htops ENGINE = MergeTree ORDER BY (hour, rank) AS
            SELECT hour, row_number() OVER (PARTITION BY hour ORDER BY ifNull(cost_usd, 0) DESC, key_id) AS rank,
                   key_id, ifNull(cost_usd, 0) AS cost_usd
            FROM r19_kh QUALIFY rank <= {MAX_N}""",
        # a recomputed day in a part of its own, as the maintainer leaves it: FINAL has versions to merge
        f"""INSERT INTO r19_kdr SELECT day, {KEYS}, cost_usd, attempts, unpriced_attempts, 2 FROM r19_kd
            WHERE day = (SELECT max(day) FROM r19_kd)""",
    ):
        started = time.perf_counter()
        store.command(sql)
        print(f"  {sql.split(' AS', 1)[0].split(chr(10))[0][:70]}: {time.perf_counter() - started:.1f} s", flush=True)
    for table in ("r19_ch", "r19_kd", "r19_tops", "r19_kdr", "r19_kdv", "r19_topsv", "r19_kh", "r19_htops"):
        print(f"  {table}: {store.query(f'SELECT count() FROM {table}').scalar():,} rows", flush=True)


def _t(at: datetime) -> str:
    return f"toDateTime('{at:%Y-%m-%d %H:%M:%S}', 'UTC')"


def top_spenders(since: datetime, until: datetime, top: int, ns: list[int]) -> dict[str, str]:
    hours = f"hour >= {_t(since)} AND hour < {_t(until)}"
    days = f"day >= toDate({_t(since)}) AND day < toDate({_t(until)})"
    order = f"ORDER BY cost_usd DESC, {KEYS} LIMIT {top}"
    answer = f"SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM {{src}} GROUP BY {KEYS} {PRICED} {order}"
    forms = {
        "names, customer_hours FINAL": answer.format(src=f"customer_hours FINAL WHERE {hours}"),
        "names": answer.format(src=f"r19_ch WHERE {hours}"),
        "id": f"""WITH (SELECT groupArray(key_id) FROM (
                      SELECT key_id, sum(cost_usd) AS c FROM r19_ch WHERE {hours} GROUP BY key_id {PRICED}
                      ORDER BY c DESC LIMIT {top} WITH TIES)) AS ids
                  {answer.format(src=f"r19_ch WHERE {hours} AND has(ids, key_id)")}""",
    }
    for n in ns:
        candidates = f"SELECT key_id FROM r19_tops WHERE {days} AND rank <= {n}"
        bound = f"(SELECT sum(cost_usd) FROM r19_tops WHERE {days} AND rank = {n})"
        forms[f"ta n={n}"] = f"""
            SELECT {KEYS}, cost_usd, cost_usd > {bound} AS beyond FROM (
              {answer.format(src=f"r19_kd WHERE {days} AND key_id IN ({candidates})")})"""
        forms[f"nra m={n}"] = nra_top_spenders(since, until, top, n)
        # versioned as a maintainer keeps them (FINAL): one row per day holding its list, the key-first day rows
        lists = f"""(SELECT (arrayFlatten(groupArray(arraySlice(keys, 1, {n}))),
                            sum(if(length(nth) >= {n}, nth[{n}], 0))) FROM r19_topsv FINAL WHERE {days}) AS lists"""
        forms[f"ta-kept n={n}"] = f"""WITH {lists}
            SELECT {KEYS}, cost_usd, cost_usd > lists.2 AS beyond FROM (
              {answer.format(src=f"r19_kdv FINAL WHERE {days} AND key_id IN (SELECT arrayJoin(lists.1))")})"""
        # no stored ranks: each day's n largest sorted out of a day grain at query time, FINAL over versions
        tops = f"""(SELECT (arrayFlatten(groupArray(ks)), sum(nth)) FROM (
                       SELECT groupArray(key_id) AS ks, if(count() = {n}, min(c), 0) AS nth FROM (
                         SELECT day, key_id, ifNull(cost_usd, 0) AS c FROM r19_kdr FINAL WHERE {days}
                         ORDER BY day, c DESC LIMIT {n} BY day) GROUP BY day)) AS tops"""
        forms[f"ta-grain n={n}"] = f"""WITH {tops}
            SELECT {KEYS}, cost_usd, cost_usd > tops.2 AS beyond FROM (
              {answer.format(src=f"r19_kdr FINAL WHERE {days} AND has(tops.1, key_id)")})"""
    return forms


def movers(today: datetime, top: int, ns: list[int]) -> dict[str, str]:
    mid, first = today - timedelta(days=7), today - timedelta(days=14)
    this_, last_ = f"hour >= {_t(mid)}", f"hour < {_t(mid)}"
    cols = ("sumIf(cost_usd, {this}) AS this_week_usd, sumIf(cost_usd, {last}) AS last_week_usd, "
            "this_week_usd - last_week_usd AS change_usd")
    order = f"ORDER BY abs(change_usd) DESC, {KEYS} LIMIT {top}"
    hours = f"hour >= {_t(first)} AND hour < {_t(today)}"
    by_hour = cols.format(this=this_, last=last_)
    answer = f"SELECT {KEYS}, {by_hour} FROM {{src}} GROUP BY {KEYS} {PRICED} {order}"
    forms = {
        "names, customer_hours FINAL": answer.format(src=f"customer_hours FINAL WHERE {hours}"),
        "names": answer.format(src=f"r19_ch WHERE {hours}"),
        "id": f"""WITH (SELECT groupArray(key_id) FROM (
                      SELECT key_id, {by_hour} FROM r19_ch WHERE {hours} GROUP BY key_id {PRICED}
                      ORDER BY abs(change_usd) DESC LIMIT {top} WITH TIES)) AS ids
                  {answer.format(src=f"r19_ch WHERE {hours} AND has(ids, key_id)")}""",
    }
    for n in ns:
        forms[f"nra m={n}"] = nra_movers(today, top, n)
    days = f"day >= toDate({_t(first)}) AND day < toDate({_t(today)})"
    by_day = cols.format(this=f"day >= toDate({_t(mid)})", last=f"day < toDate({_t(mid)})")
    for n in ns:
        candidates = f"SELECT key_id FROM r19_tops WHERE {days} AND rank <= {n}"
        bound = (f"(SELECT greatest(sumIf(cost_usd, day >= toDate({_t(mid)})), "
                 f"sumIf(cost_usd, day < toDate({_t(mid)}))) FROM r19_tops WHERE {days} AND rank = {n})")
        forms[f"ta n={n}"] = f"""
            SELECT {KEYS}, this_week_usd, last_week_usd, change_usd, abs(change_usd) > {bound} AS beyond FROM (
              SELECT {KEYS}, {by_day} FROM r19_kd WHERE {days} AND key_id IN ({candidates})
              GROUP BY {KEYS} {PRICED} {order})"""
    return forms


def nra_keys(days: str, m: int, per_key: str) -> str:
    """Each listed key's known part and its upper bound from the day lists alone (longest lists: ``m``)."""
    return f"""nth AS (SELECT day, cost_usd AS nth FROM r19_tops WHERE {days} AND rank = {m}),
        keyed AS (SELECT key_id, {per_key} FROM r19_tops AS t LEFT JOIN nth AS n ON t.day = n.day
                  WHERE {days} AND rank <= {m} GROUP BY key_id)"""


def nra_top_spenders(since: datetime, until: datetime, top: int, m: int) -> str:
    """The top keys from the lists alone, exact sums read only for the keys that could still be among them.

    A listed key is known on the days it is listed and at most that day's ``m``-th cost on the others (``lo`` ..
    ``hi``); an unlisted key costs at most the days' ``m``-th costs summed. ``floor`` = the ``top``-th largest
    ``lo``: at least ``top`` keys cost that much, so only keys with ``hi >= floor`` can be in the answer or tie it;
    their exact sums decide. Exact when the unlisted keys' bound is strictly below ``floor``."""
    days = f"day >= toDate({_t(since)}) AND day < toDate({_t(until)})"
    total = f"(SELECT sum(cost_usd) FROM r19_tops WHERE {days} AND rank = {m})"
    per_key = f"sum(t.cost_usd) AS lo, lo + {total} - sum(n.nth) AS hi"
    order = f"ORDER BY cost_usd DESC, {KEYS} LIMIT {top}"
    return f"""WITH {nra_keys(days, m, per_key)},
        (SELECT min(lo) FROM (SELECT lo FROM keyed ORDER BY lo DESC LIMIT {top})) AS floor,
        {total} AS unlisted
        SELECT {KEYS}, cost_usd, floor > unlisted AS beyond FROM (
          SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM r19_kd
          WHERE {days} AND key_id IN (SELECT key_id FROM keyed WHERE hi >= floor)
          GROUP BY {KEYS} {PRICED} {order})"""


def nra_movers(today: datetime, top: int, m: int) -> str:
    """Movers the same way: each week's known part and bound per key, |this - last| bounded from both."""
    mid, first = today - timedelta(days=7), today - timedelta(days=14)
    days = f"day >= toDate({_t(first)}) AND day < toDate({_t(today)})"
    this = f"t.day >= toDate({_t(mid)})"
    totals = (f"(SELECT (sumIf(cost_usd, day >= toDate({_t(mid)})), sumIf(cost_usd, day < toDate({_t(mid)}))) "
              f"FROM r19_tops WHERE {days} AND rank = {m})")
    per_key = (f"sumIf(t.cost_usd, {this}) AS lo_this, lo_this + totals.1 - sumIf(n.nth, {this}) AS hi_this, "
               f"sumIf(t.cost_usd, NOT {this}) AS lo_last, lo_last + totals.2 - sumIf(n.nth, NOT {this}) AS hi_last, "
               f"greatest(0, lo_this - hi_last, lo_last - hi_this) AS lo, "
               f"greatest(hi_this - lo_last, hi_last - lo_this) AS hi")
    cols = (f"sumIf(cost_usd, day >= toDate({_t(mid)})) AS this_week_usd, "
            f"sumIf(cost_usd, day < toDate({_t(mid)})) AS last_week_usd, this_week_usd - last_week_usd AS change_usd")
    return f"""WITH {totals} AS totals, {nra_keys(days, m, per_key)},
        (SELECT min(lo) FROM (SELECT lo FROM keyed ORDER BY lo DESC LIMIT {top})) AS floor
        SELECT {KEYS}, this_week_usd, last_week_usd, change_usd, floor > greatest(totals.1, totals.2) AS beyond
        FROM (SELECT {KEYS}, {cols} FROM r19_kd WHERE {days} AND key_id IN (SELECT key_id FROM keyed WHERE hi >= floor)
              GROUP BY {KEYS} {PRICED} ORDER BY abs(change_usd) DESC, {KEYS} LIMIT {top})"""


def movers_real(end: datetime, top: int, m_day: int, m_hour: int) -> dict[str, str]:
    """Movers' real weeks (``end`` - 7 days .. ``end``, and the 7 before; ``end`` on an hour here): whole days from
    the day lists, the partial days' hours (the two weeks' ends and today) from hour lists, lists-first (``nra``)."""
    mid, first = end - timedelta(days=7), end - timedelta(days=14)
    today = end.replace(hour=0)
    week = f"if(p >= {_t(mid)}, 'this', 'last')"
    # whole days of either week, and the hours of the days the weeks' ends cut
    whole = (f"day > toDate({_t(first)}) AND day < toDate({_t(today)}) AND day != toDate({_t(mid)})"
             if mid.hour else f"day >= toDate({_t(first)}) AND day < toDate({_t(today)})")
    cut = (f"hour >= {_t(first)} AND hour < {_t(end)} AND (toDate(hour) IN (toDate({_t(first)}), "
           f"toDate({_t(mid)}) , toDate({_t(end)})))")
    lists = f"""SELECT toDateTime(day) AS p, key_id, cost_usd, rank, {m_day} AS m FROM r19_tops WHERE {whole}
                  AND rank <= {m_day}
                UNION ALL SELECT hour AS p, key_id, cost_usd, rank, {m_hour} AS m FROM r19_htops WHERE {cut}
                  AND rank <= {m_hour}"""
    nth = f"(SELECT p, {week} AS w, if(rank = m, cost_usd, 0) AS nth FROM ({lists}) WHERE rank = m)"
    totals = f"(SELECT (sumIf(nth, w = 'this'), sumIf(nth, w = 'last')) FROM {nth}) AS totals"
    this = "l.p >= " + _t(mid)
    keyed = f"""SELECT key_id, sumIf(l.cost_usd, {this}) AS lo_this,
                   lo_this + totals.1 - sumIf(n.nth, {this}) AS hi_this,
                   sumIf(l.cost_usd, NOT {this}) AS lo_last, lo_last + totals.2 - sumIf(n.nth, NOT {this}) AS hi_last,
                   greatest(0, lo_this - hi_last, lo_last - hi_this) AS lo,
                   greatest(hi_this - lo_last, hi_last - lo_this) AS hi
                FROM ({lists}) AS l LEFT JOIN {nth} AS n ON l.p = n.p GROUP BY key_id"""
    by = (f"sumIf(cost_usd, p >= {_t(mid)}) AS this_week_usd, sumIf(cost_usd, p < {_t(mid)}) AS last_week_usd, "
          f"this_week_usd - last_week_usd AS change_usd")
    order = f"ORDER BY abs(change_usd) DESC, {KEYS} LIMIT {top}"
    measures = f"{KEYS}, cost_usd, attempts, unpriced_attempts"
    chosen = "key_id IN (SELECT key_id FROM keyed WHERE hi >= floor)"
    one_pass = f"""key_id IN (SELECT key_id FROM (
        SELECT key_id, hi, nth_value(lo, {top}) OVER (
          ORDER BY lo DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS floor FROM ({keyed}))
        WHERE hi >= floor AND floor > greatest(totals.1, totals.2))"""
    rows = (f"(SELECT toDateTime(day) AS p, {measures} FROM r19_kd WHERE {whole} AND {chosen} "
            f"UNION ALL SELECT hour AS p, {measures} FROM r19_kh WHERE {cut} AND {chosen})")
    return {
        "names": f"""SELECT {KEYS}, {by} FROM (SELECT hour AS p, {measures} FROM r19_ch
                     WHERE hour >= {_t(first)} AND hour < {_t(end)}) GROUP BY {KEYS} {PRICED} {order}""",
        f"nra days m={m_day}, hours m={m_hour}": f"""WITH {totals}, keyed AS ({keyed}),
            (SELECT min(lo) FROM (SELECT lo FROM keyed ORDER BY lo DESC LIMIT {top})) AS floor
            SELECT {KEYS}, this_week_usd, last_week_usd, change_usd, floor > greatest(totals.1, totals.2) AS beyond
            FROM (SELECT {KEYS}, {by} FROM {rows} GROUP BY {KEYS} {PRICED} {order})""",
        # the floor as a window over the listed keys, the lists joined once (no rows: not exact, fall back)
        f"nra days m={m_day}, hours m={m_hour}, one pass": f"""WITH {totals}
            SELECT {KEYS}, {by}, 1 AS beyond FROM {rows.replace(chosen, one_pass)}
            GROUP BY {KEYS} {PRICED} {order}""",
    }


def with_today(since: datetime, today: datetime, top: int, n: int, n_hour: int) -> dict[str, str]:
    """Top spenders from ``since`` through today's closed hours: the closed days' lists and today's hours' lists."""
    order = f"ORDER BY cost_usd DESC, {KEYS} LIMIT {top}"
    answer = f"SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM {{src}} GROUP BY {KEYS} {PRICED} {order}"
    days = f"day >= toDate({_t(since)}) AND day < toDate({_t(today)})"
    hours = f"hour >= {_t(today)}"
    candidates = (f"SELECT key_id FROM r19_tops WHERE {days} AND rank <= {n} "
                  f"UNION ALL SELECT key_id FROM r19_htops WHERE {hours} AND rank <= {n_hour}")
    bound = (f"((SELECT sum(cost_usd) FROM r19_tops WHERE {days} AND rank = {n}) + "
             f"(SELECT sum(cost_usd) FROM r19_htops WHERE {hours} AND rank = {n_hour}))")
    measures = f"{KEYS}, cost_usd, attempts, unpriced_attempts"
    rows = (f"(SELECT {measures} FROM r19_kd WHERE {days} AND key_id IN cand "
            f"UNION ALL SELECT {measures} FROM r19_kh WHERE {hours} AND key_id IN cand)")
    # nra with today grouped whole per key (its exact part added to every key's lo and hi)
    m = n * 10
    total = f"(SELECT sum(cost_usd) FROM r19_tops WHERE {days} AND rank = {m})"
    listed = f"""SELECT key_id, sum(t.cost_usd) AS lo, lo + {total} - sum(n.nth) AS hi
                 FROM r19_tops AS t LEFT JOIN (SELECT day, cost_usd AS nth FROM r19_tops WHERE {days} AND rank = {m})
                 AS n ON t.day = n.day WHERE {days} AND rank <= {m} GROUP BY key_id"""
    of_today = f"SELECT key_id, ifNull(sum(cost_usd), 0) AS c FROM r19_ch WHERE {hours} GROUP BY key_id"
    nra = f"""WITH keyed AS (
            SELECT if(l.key_id = 0, d.key_id, l.key_id) AS key_id, l.lo + d.c AS lo,
                   if(l.key_id = 0, {total}, l.hi) + d.c AS hi
            FROM ({listed}) AS l FULL OUTER JOIN ({of_today}) AS d ON l.key_id = d.key_id),
          (SELECT min(lo) FROM (SELECT lo FROM keyed ORDER BY lo DESC LIMIT {top})) AS floor
        SELECT {KEYS}, cost_usd, floor > {total} AS beyond FROM ({answer.format(
            src=rows.replace("key_id IN cand", "key_id IN (SELECT key_id FROM keyed WHERE hi >= floor)"))})"""
    return {
        "names": answer.format(src=f"r19_ch WHERE hour >= {_t(since)}"),
        f"ta n={n}, hours n={n_hour}": f"""WITH cand AS ({candidates})
            SELECT {KEYS}, cost_usd, cost_usd > {bound} AS beyond FROM ({answer.format(src=rows)})""",
        f"nra m={m}, today grouped whole": nra,
    }


def today_part(today: datetime, n: int) -> dict[str, str]:
    """Today's closed hours, which no day grain holds: what the bound's share of today costs when grouped whole."""
    hours = f"hour >= {_t(today)}"
    return {
        "names": f"""SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM r19_ch WHERE {hours} GROUP BY {KEYS} {PRICED}
                     ORDER BY cost_usd DESC, {KEYS} LIMIT {n}""",
        "names, customer_hours FINAL": f"""SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM customer_hours FINAL
                     WHERE {hours} GROUP BY {KEYS} {PRICED} ORDER BY cost_usd DESC, {KEYS} LIMIT {n}""",
        "id": f"""WITH (SELECT groupArray(key_id) FROM (
                      SELECT key_id, sum(cost_usd) AS c FROM r19_ch WHERE {hours} GROUP BY key_id {PRICED}
                      ORDER BY c DESC LIMIT {n} WITH TIES)) AS ids
                  SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM r19_ch WHERE {hours} AND has(ids, key_id)
                  GROUP BY {KEYS} {PRICED} ORDER BY cost_usd DESC, {KEYS} LIMIT {n}""",
    }


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)  # chdb runs in this process
    return used.ru_utime + used.ru_stime


def timed(store: EmbeddedStore, title: str, forms: dict[str, str], rounds: int) -> None:
    expected = store.query(forms["names"]).rows
    wall: dict[str, list[float]] = {name: [] for name in forms}
    cpu: dict[str, list[float]] = {name: [] for name in forms}
    exact: dict[str, bool] = {}
    for i in range(rounds):
        for name in list(forms) if i % 2 == 0 else list(forms)[::-1]:  # A B C, C B A, ...
            started, used = time.perf_counter(), cpu_s()
            rows = store.query(forms[name]).rows
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_s() - used)
            if name.startswith(("ta", "nra")):
                exact[name] = len(rows) == len(expected) and bool(rows[-1][-1])
                if exact[name] and [r[:-1] for r in rows] != expected:
                    raise AssertionError(f"{title}, {name}: exact by its bound, yet not the grouping's rows")
            elif rows != expected:
                raise AssertionError(f"{title}, {name}: not the grouping's rows")
    for name in forms:
        verdict = "" if name not in exact else (" exact" if exact[name] else " bound not met: fall back")
        print(f"| {title} | {name} | {statistics.median(wall[name]) * 1000:.0f} "
              f"| {statistics.median(cpu[name]) * 1000:.0f} |{verdict}", flush=True)


def bounds(store: EmbeddedStore, today: datetime, ns: list[int]) -> None:
    """Per n: the day lists' bound for a day, a week and Movers' two weeks, and how many keys the lists hold."""
    for n in ns:
        week, day, candidates = store.query(f"""
            SELECT sumIf(cost_usd, day >= toDate({_t(today - timedelta(days=7))}) AND rank = {n}),
                   sumIf(cost_usd, day >= toDate({_t(today - timedelta(days=1))}) AND rank = {n}),
                   uniqExactIf(key_id, day >= toDate({_t(today - timedelta(days=7))}) AND rank <= {n})
            FROM r19_tops WHERE day < toDate({_t(today)})""").rows[0]
        this, last, movers = store.query(f"""
            SELECT sumIf(cost_usd, day >= toDate({_t(today - timedelta(days=7))}) AND rank = {n}),
                   sumIf(cost_usd, day < toDate({_t(today - timedelta(days=7))}) AND rank = {n}),
                   uniqExactIf(key_id, rank <= {n})
            FROM r19_tops
            WHERE day >= toDate({_t(today - timedelta(days=14))}) AND day < toDate({_t(today)})""").rows[0]
        print(f"  day lists, n={n}: bound week {float(week or 0):.2f} ({candidates:,} candidates), "
              f"day {float(day or 0):.2f}; Movers' 14 days {float(max(this or 0, last or 0)):.2f} "
              f"({movers:,} candidates)", flush=True)


def hour_lists(store: EmbeddedStore, today: datetime) -> None:
    """Lists per hour instead of per day: the bound and the candidates for a day, a week and Movers' 14 days."""
    for label, days in (("day", 1), ("week", 7), ("14 days", 14)):
        since, until = _t(today - timedelta(days=days)), _t(today)
        for n in (30, 100, 1000, MAX_N):
            bound, candidates = store.query(f"""
                SELECT sumIf(c, rank = {n}), uniqExactIf(key_id, rank <= {n}) FROM (
                  SELECT hour, key_id, c, row_number() OVER (PARTITION BY hour ORDER BY c DESC, key_id) AS rank FROM (
                    SELECT hour, key_id, ifNull(sum(cost_usd), 0) AS c FROM r19_ch
                    WHERE hour >= {since} AND hour < {until} GROUP BY hour, key_id) QUALIFY rank <= {n})""").rows[0]
            print(f"  hour lists, {label}, n={n}: bound {float(bound or 0):.2f}, {candidates:,} candidates", flush=True)


def ranking_cost(store: EmbeddedStore, today: datetime, rounds: int) -> None:
    """What keeping a day's list costs the maintainer: the day's keys grouped from ``customer_hours`` and ranked."""
    day = _t(today - timedelta(days=1))
    grain = f"""SELECT {KEY_ID} AS key_id, sum(cost_usd) AS cost_usd FROM customer_hours FINAL
                WHERE hour >= {day} AND hour < {day} + INTERVAL 1 DAY GROUP BY {KEYS}"""
    forms = {"grouped": f"SELECT count() FROM ({grain})",
             "grouped and ranked": f"""SELECT count() FROM (SELECT key_id, row_number() OVER (
                 ORDER BY ifNull(cost_usd, 0) DESC, key_id) AS rank FROM ({grain}) QUALIFY rank <= {MAX_N})"""}
    cpu: dict[str, list[float]] = {name: [] for name in forms}
    for i in range(rounds):
        for name in list(forms) if i % 2 == 0 else list(forms)[::-1]:
            used = cpu_s()
            store.query(forms[name])
            cpu[name].append(cpu_s() - used)
    for name in forms:
        print(f"  a day's keys {name}: {statistics.median(cpu[name]) * 1000:.0f} ms CPU", flush=True)


def sweep(store: EmbeddedStore, today: datetime, ms: list[int]) -> None:
    """Whether ``nra`` ends the bound for other ranges: a day and a week ending on each of the last 8 days."""
    verdicts = []
    for back in range(8):
        end = today - timedelta(days=back)
        for days in (1, 7):
            forms = top_spenders(end - timedelta(days=days), end, 10, ms)
            expected = store.query(forms["names"]).rows
            for m in ms:
                rows = store.query(forms[f"nra m={m}"]).rows
                exact = len(rows) == len(expected) and bool(rows[-1][-1])
                if exact and [r[:-1] for r in rows] != expected:
                    raise AssertionError(f"nra m={m}, {days} days to {end}: exact by its bound, yet other rows")
                verdicts.append(exact)
    print(f"  nra, a day and a week ending on each of 8 days, m in {ms}: {sum(verdicts)} of {len(verdicts)} exact",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a copy of a read_scale.py store (opened by this process alone)")
    parser.add_argument("--result", type=Path, required=True, help="the load's result JSON (its `started` is now)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--build", action="store_true", help="(re)build the scratch tables first")
    parser.add_argument("--n", type=int, action="append", help="per-day list lengths for ta (default 100, 1000, 3000)")
    parser.add_argument("--only", action="append",
                        choices=("day", "week", "movers", "movers real", "today", "with today", "bounds"))
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"]).replace(tzinfo=None)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ns = args.n or [100, 1000, MAX_N]
    store = EmbeddedStore(args.data_dir)
    try:
        print(f"now {now}; load average {os.getloadavg()}", flush=True)
        if args.build:
            build(store, today - timedelta(days=14))
        bounds(store, today, ns)
        if not args.only or "bounds" in args.only:
            hour_lists(store, today)
            ranking_cost(store, today, args.rounds)
            sweep(store, today, ns)
        print("| question (closed days) | form | wall ms | CPU ms |\n|---|---|---|---|", flush=True)
        for label, days in (("day", 1), ("week", 7)):
            if not args.only or label in args.only:
                timed(store, f"Top spenders, {label}", top_spenders(today - timedelta(days=days), today, 10, ns),
                      args.rounds)
        if not args.only or "with today" in args.only:
            for label, days in (("day", 1), ("week", 7)):
                timed(store, f"Top spenders, {label} + today's closed hours",
                      with_today(today - timedelta(days=days), today, 10, 100, 100), args.rounds)
        if not args.only or "today" in args.only:
            timed(store, "Today's closed hours, top 100", today_part(today, 100), args.rounds)
        if not args.only or "movers real" in args.only:
            end = now.replace(minute=0, second=0, microsecond=0)
            for m_hour in (100, 1000):
                timed(store, f"Movers, weeks from {end:%H:%M}", movers_real(end, 20, 1000, m_hour), args.rounds)
        if not args.only or "movers" in args.only:
            timed(store, "Movers (14 whole days)", movers(today, 20, ns), args.rounds)
        print(f"load average {os.getloadavg()}", flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
