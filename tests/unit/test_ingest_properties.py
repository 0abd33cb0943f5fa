"""Re-applying any message yields nothing new (Equinox's verifyIdempotency, for the whole
ingest service): redeliveries at the same offsets, upstream retries at new offsets, any
batching. Runs on the embedded SQLite store; the same contract holds on PostgreSQL
(tests/integration/test_store_contract.py)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.bootstrap import build
from services.config import Settings, Topics
from services.digest import digest
from services.ingest.messages import InputMessage
from services.ingest.service import IngestService
from services.inputs import REGISTRY

TOPICS = Topics()
START = datetime(2025, 1, 1, tzinfo=UTC)
MEMBERS = ("ann", "bob", "cy")

member = st.sampled_from(MEMBERS)
bodies = st.one_of(
    st.builds(
        lambda m, o, a: {
            "type": "purchase",
            "member_id": m,
            "order_id": o,
            "amount": a,
            "currency": "EUR",
        },
        member,
        st.sampled_from(("o1", "o2", "o3")),
        st.integers(1, 5000).map(str),
    ),
    st.builds(
        lambda m, o, a: {"type": "refund", "member_id": m, "order_id": o, "amount": a},
        member,
        st.sampled_from(("o1", "o2", "o3")),
        st.integers(1, 3000).map(str),
    ),
    st.builds(lambda m, r: {"type": "referral", "referee_id": m, "referrer_id": r}, member, member),
    st.builds(lambda m: {"type": "social_share", "member_id": m, "network": "x"}, member),
    st.builds(
        lambda m, p: {"type": "redemption", "member_id": m, "points": p, "reward": "mug"},
        member,
        st.integers(1, 3000),
    ),
    st.just({"type": "purchase", "member_id": "ann"}),  # missing fields: a dead letter
)
streams = st.lists(st.tuples(st.integers(0, 30 * 24), bodies), min_size=1, max_size=40)


def messages(stream: list[tuple[int, dict[str, Any]]]) -> list[InputMessage]:
    """One partition per topic, offsets in order, each event dated after the last."""
    at, out, offsets = START, [], {t: 0 for t in TOPICS.inputs}
    for n, (hours, body) in enumerate(stream):
        at += timedelta(hours=hours)
        event = {"event_id": f"e{n}", "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), **body}
        topic = REGISTRY.topic_of(TOPICS, event["type"])
        assert topic is not None
        key = event.get("member_id", event.get("referee_id"))
        out.append(InputMessage(topic, 0, offsets[topic], key.encode(), orjson.dumps(event)))
        offsets[topic] += 1
    return out


def ingest(service: IngestService, batches: list[list[InputMessage]]) -> None:
    for batch in batches:
        service.commit(*service.decode(batch))


def decided(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Messages applied or rejected, per topic."""
    return {key: n for key, n in counts.items() if key[1] in ("applied", "rejected")}


def split(items: list[InputMessage], cuts: list[int]) -> list[list[InputMessage]]:
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in pairwise(bounds) if b > a]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(0, 100), max_size=5), st.data())
def test_redeliveries_and_retries_change_nothing(
    stream: list[tuple[int, dict[str, Any]]], cuts: list[int], data: st.DataObject
) -> None:
    inputs = messages(stream)
    with tempfile.TemporaryDirectory() as folder:
        context = build(Settings(database_url=f"sqlite:///{folder}/s.sqlite3", daily_sweep=False))
        service = context.ingest_service()
        ingest(service, split(inputs, cuts))
        once_digest, once_counts = (
            digest(context.ledger, context.program),
            dict(context.ledger.message_counts()),
        )
        position = context.ledger.last_position()

        # A crash before the Kafka commit: any of those messages, read again at their offsets.
        again = data.draw(st.lists(st.sampled_from(inputs), max_size=10))
        report = service.commit(*service.decode(again))
        assert report.skipped == len(again) and not report.outcomes
        # An upstream retry: the same bytes again at new offsets, after everything else.
        retried = data.draw(st.lists(st.sampled_from(inputs), max_size=10, unique=True))
        ends = {
            t: 1 + max((m.offset for m in inputs if m.topic == t), default=-1)
            for t in TOPICS.inputs
        }
        copies = [m._replace(offset=ends[m.topic] + i) for i, m in enumerate(retried)]
        ingest(service, [copies])

        assert digest(context.ledger, context.program) == once_digest
        assert context.ledger.last_position() == position  # not one event more
        counts = context.ledger.message_counts()
        assert sum(counts.values()) == len(inputs) + len(copies)
        assert decided(counts) == decided(once_counts)  # the copies were only duplicates
