"""One worker draining a backlog, for comparing two versions of the code in one sitting.

    .venv/bin/python bench/drain.py --events 1000000
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/drain.py --events 1000000

Preloads ``--events`` events of the throughput workload (bench/workload.py) into a
fresh topic of a fresh local broker, then times one worker (detectors off) from the
first rows queryable to the last, as bench/throughput.py does. Run it for each
version back to back on a quiet machine and compare the rates: the absolute figure
moves with the machine, the ratio of two runs does not (much).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from throughput import one_worker  # noqa: E402
from workload import base_events, preload  # noqa: E402

import spendstream  # noqa: E402
from spendstream.kafka_admin import ensure_topics  # noqa: E402
from spendstream.localbroker import LocalBroker  # noqa: E402

PARTITIONS = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    base = base_events(50_000)
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        bootstrap = broker.start()
        topic = "bench.drain"
        ensure_topics(bootstrap, {topic: PARTITIONS})
        preload(bootstrap, topic, base, args.events)
        result = one_worker(bootstrap, Path(tmp), topic, args.events, detect=False)
    result["code"] = str(Path(spendstream.__file__).parent.parent)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
