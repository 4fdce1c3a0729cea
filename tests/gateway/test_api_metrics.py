"""/metrics complete (issue 18 part 3): messages in by channel and action and the decision
latency as a Prometheus histogram, read from the store (the same on every instance). The
exposition must parse in prometheus_client's own parser, and the figures move after an
ingest; on SQLite and PostgreSQL."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA
from tests.gateway.test_api import desk  # noqa: F401  (the fixture)
from tests.mailfactory import mail

LATENCY = "helpgate_decision_latency_seconds"


async def scrape(desk) -> dict[str, dict]:  # noqa: F811
    """The families /metrics serves, parsed by the reference parser: {name: {"type",
    "samples": {(sample name, frozen labels): value}}}."""
    response = await desk.client.get("/metrics", headers=desk.auth())
    assert response.status == 200
    families = {}
    for family in text_string_to_metric_families(await response.text()):
        families[family.name] = {"type": family.type, "samples": {
            (s.name, frozenset(s.labels.items())): s.value for s in family.samples}}
    return families


def sample(families, family: str, name: str, **labels) -> float:
    return families[family]["samples"].get((name, frozenset(labels.items())), 0.0)


async def test_messages_by_action_and_the_decision_latency(desk):  # noqa: F811
    empty = await scrape(desk)
    assert empty[LATENCY]["type"] == "histogram"
    assert empty["helpgate_messages_by_action"]["type"] == "gauge"
    assert empty[LATENCY]["samples"] == {}  # nothing decided yet

    number = await desk.ticket()  # decided at once: latency 0
    await desk.pipeline.ingest_email(mail(subject=f"Re: [#{number}] Принтер",
                                          body="Спасибо, заработал."))
    await desk.pipeline.ingest_email((DATA / "no_sender.eml").read_bytes())
    # A message kept and decided 90 seconds later (crash recovery).
    message = desk.pipeline.parse(mail(subject="Новая заявка", message_id="<late@x>"))
    await desk.store.keep_raw(message, message.sender_key)
    desk.clock.advance(seconds=90)
    [late] = await desk.pipeline.process_received()
    assert str(late.action) == "new_ticket"

    after = await scrape(desk)
    family = "helpgate_messages_by_action"
    assert sample(after, family, family, channel="email", action="new_ticket") == 2
    assert sample(after, family, family, channel="email", action="comment") == 1
    assert sample(after, family, family, channel="email", action="quarantined") == 1
    bucket = f"{LATENCY}_bucket"
    assert sample(after, LATENCY, f"{LATENCY}_count", channel="email") == 4
    assert sample(after, LATENCY, bucket, channel="email", le="+Inf") == 4
    assert sample(after, LATENCY, bucket, channel="email", le="0.005") == 3
    assert sample(after, LATENCY, bucket, channel="email", le="60.0") == 3
    assert sample(after, LATENCY, bucket, channel="email", le="300.0") == 4
    assert abs(sample(after, LATENCY, f"{LATENCY}_sum", channel="email") - 90.0) < 0.01
    # The buckets are cumulative, as the format requires.
    counts = [v for (name, labels), v in after[LATENCY]["samples"].items()
              if name == bucket]
    assert counts == sorted(counts)

    await desk.ticket(subject="Ещё одна")
    moved = await scrape(desk)
    assert sample(moved, family, family, channel="email", action="new_ticket") == 3
    assert sample(moved, LATENCY, f"{LATENCY}_count", channel="email") == 5
