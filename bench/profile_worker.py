"""Where a draining worker's time goes: py-spy over its Python threads, per-thread CPU over all of them.

    .venv/bin/pip install -e '.[bench]'        # py-spy
    .venv/bin/python bench/profile_worker.py   # 2M events; ~1 minute

Preloads the throughput run's events (bench/workload.py), starts one worker and,
once the first rows are queryable, samples it for a few seconds with
``py-spy record --gil`` (what holds the GIL: the Python work) while reading every
thread's CPU time from /proc (chdb's insert and merge threads run without the GIL,
so py-spy does not see them). Prints both summaries.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from throughput import PARTITIONS, count  # noqa: E402
from workload import base_events, preload  # noqa: E402

from spendstream.demo.worker_process import WorkerProcess  # noqa: E402
from spendstream.kafka_admin import ensure_topics  # noqa: E402
from spendstream.localbroker import LocalBroker  # noqa: E402
from spendstream.settings import Settings  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid: int) -> collections.Counter[str]:
    """CPU seconds so far per thread name (threads of one name summed); threads that ended
    (chdb starts query pipeline threads per insert) are counted under "(ended threads)"."""
    seconds: collections.Counter[str] = collections.Counter()
    process = _cpu(Path(f"/proc/{pid}/stat").read_text())
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        seconds[stat[stat.index("(") + 1:stat.rindex(")")]] += _cpu(stat)
    seconds["(ended threads)"] = process - sum(seconds.values())
    return seconds


def summarise(raw: Path, top: int) -> list[str]:
    """py-spy's raw (collapsed) stacks as inclusive and self shares of the samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        n, frames = int(samples), stack.split(";")
        total += n
        names = [frame.split(" (")[0] + " (" + frame.rsplit("/", 1)[-1].split(":")[0] for frame in frames]
        for name in set(names):
            inclusive[name] += n
        own[frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")] += n
    lines = [f"{total} samples holding the GIL", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {name})" for name, n in inclusive.most_common(top)]
    lines += ["self (function file:line):"] + [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        root, topic = Path(tmp), "profile.usage"
        ensure_topics(broker.bootstrap_servers, {topic: PARTITIONS})
        preload(broker.bootstrap_servers, topic, base_events(100_000), args.events, run="profile")
        settings = Settings(data_dir=root / "data", usage_topic=topic, consumer_group="profile",
                            topic_partitions=PARTITIONS)
        with WorkerProcess(settings, bootstrap_servers=broker.bootstrap_servers,
                           log_path=root / "worker.log") as worker:
            client = worker.query_client()
            while count(client) == 0:
                time.sleep(0.05)
            before, started = thread_cpu(worker.pid), time.perf_counter()
            subprocess.run([py_spy, "record", "-p", str(worker.pid), "-d", str(args.seconds), "-r", "100", "--gil",
                            "--format", "raw", "-o", str(root / "flame.txt")], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            after, wall = thread_cpu(worker.pid), time.perf_counter() - started
            stored = count(client)
        flame = summarise(root / "flame.txt", args.top)
    print(f"{args.seconds} s of a worker draining {args.events:,} events ({stored:,} stored by the end)")
    print("CPU per thread (cores busy over the window):")
    used = collections.Counter({name: after[name] - before.get(name, 0.0) for name in after})
    for name, seconds in used.most_common():
        if seconds > 0:
            print(f"  {seconds / wall:5.2f}  {name}")
    print(f"  {sum(used.values()) / wall:5.2f}  in all")
    print("\n".join(flame))


if __name__ == "__main__":
    main()
