"""The ingest service's instructions a message: a yardstick that holds still.

This machine's speed swings by tens of per cent from one hour (or minute) to the next,
so two runs of `make bench` cannot tell a 3% change from the noise. Valgrind counts the
instructions the interpreter runs instead, the same from run to run within a fraction of
a per cent. The bench's stream goes through the ingest service (decode, decide, write to
a fresh PostgreSQL database; no Kafka) twice, its first SMALL messages and its first
LARGE: the difference, over LARGE - SMALL, is a message's count, start-up left out.
Instructions are not time (a cache miss costs more than an add), so a lever found here
is confirmed by `make bench` before it is kept.

    python -m tests.bench.instructions [--small 5000] [--large 15000]

The default window is mostly new members' first events; `--small 40000 --large 50000`
measures members with histories (the steady state of a long stream), in ~15 minutes.

Needs `valgrind` on the PATH and LOYALTY_DATABASE_URL (a server it may create databases
on); ~1.5 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice

import orjson

from services.bootstrap import build
from services.config import Settings
from services.demo import generate
from services.ingest.messages import InputMessage
from services.publish import route
from tests.conftest import _create_database, drop_databases

START = datetime(2026, 11, 1, tzinfo=UTC)  # the stream's last day
BATCH = 5000  # the worker's
PARTITIONS = 4


def messages(count: int, settings: Settings) -> list[InputMessage]:
    """The bench's stream (~7 events a member over 700 days), fixed, as Kafka would hand
    it over: keyed, partitioned, stamped after every event."""
    events = islice(generate(count // 7 + 1, 42, START, days=700), count)
    stamped = int((START + timedelta(days=1)).timestamp() * 1000)
    offsets: dict[tuple[str, int], int] = {}
    batch = []
    for line in map(orjson.dumps, events):
        routed = route(line, settings.topics)
        assert routed is not None, line  # the demo's own types, each with its key
        topic, key = routed
        assert key is not None, line
        partition = zlib.crc32(key) % PARTITIONS
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        batch.append(InputMessage(topic, partition, offset, key, line, stamped))
    return batch


def ingest(count: int, total: int) -> None:
    """The child: the first `count` of `total` messages, on a database of its own. The
    whole stream is made either way, so that only the ingesting differs."""
    url = _create_database(os.environ["LOYALTY_DATABASE_URL"], f"i_{uuid.uuid4().hex[:12]}")
    try:
        settings = replace(Settings.from_env(), database_url=url)
        stream = messages(total, settings)[:count]
        service = build(settings).ingest_service()
        for start in range(0, len(stream), BATCH):
            service.write(service.prepare(*service.decode(stream[start : start + BATCH])))
    finally:
        drop_databases([url])


def counted(count: int, total: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "tests.bench.instructions",
        "--child",
        str(count),
        "--large",
        str(total),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same set orders in every run
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise SystemExit(f"valgrind said no count:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=15000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        ingest(args.child, args.large)
        return
    small, large = counted(args.small, args.large), counted(args.large, args.large)
    per_message = (large - small) / (args.large - args.small)
    print(f"instructions: {per_message:,.0f} a message (ingest service, no Kafka)")


if __name__ == "__main__":
    main()
