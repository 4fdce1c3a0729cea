"""One status-change service (issue #15 item 8, R-TS-3, R-TS-4, R-OUT-5): the same change
made by a timer, by an arriving message (the timers a ticket is owed, a reopen) and by the
CLI records the same history, keeps the same ticket times and queues the same
notifications, on both backends."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import pytest

from helpgate.config.schema import Config, StatusConfig
from helpgate.gateway import cli
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.status_service import status_service
from helpgate.gateway.timers import run_due_timers
from helpgate.ticketstore.queries import outbox_list, ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.conftest import Clock
from tests.mailfactory import mail


def announcing() -> Config:
    """Resolved tickets close after a day; entering open, resolved or closed is announced."""
    states = [s if s.id != "resolved" else s.model_copy(update={"auto_after": "1d"})
              for s in StatusConfig().states]
    return Config(statuses=StatusConfig(states=states),
                  notifications={"status_changes": ["open", "resolved", "closed"]})


async def resolve(store, config, number: int, now: datetime) -> None:
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        status_service(config).request(session, ticket, "resolved", now, "test")
    await store.run(work)


async def told(store, number: int) -> list[tuple[str, str, str]]:
    """The status notifications queued for one ticket: (recipient, subject, text), with
    the ticket's number as N (the stories run side by side in one database)."""
    def plain(text: str) -> str:
        return text.replace(f"[#{number}]", "[#N]").replace(f" {number} ", " N ")
    return [(row["to"], plain(row["subject"]), plain(row["text"]))
            for row in await store.run(outbox_list)
            if row["kind"] == "status" and row["ticket"] == number]


async def ticket(store, config, number: int, now: datetime) -> dict:
    return await store.run(lambda s: ticket_detail(s, config, ticket_by_number(s, number),
                                                   now))


async def closed_by(how: str, store, clock) -> tuple[dict, list]:
    config = announcing()
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await resolve(store, config, number, clock.advance(hours=2))
    clock.advance(days=3)
    if how == "timer":
        assert await store.run(run_due_timers, config, clock.now) == 1
    else:  # the customer writes after the close time; no timer loop ran in between
        result = await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Опять"))
        assert result.previous_ticket == number
    return await ticket(store, config, number, clock.now), await told(store, number)


async def test_a_close_by_timer_and_by_an_arriving_message_are_the_same(store):
    by_timer, timer_told = await closed_by("timer", store, Clock())
    by_message, message_told = await closed_by("message", store, Clock())
    history = [(h["from"], h["to"], h["reason"]) for h in by_message["status_history"]]
    assert history == [(None, "open", "created from email"), ("open", "resolved", "test"),
                       ("resolved", "closed", "timer")]
    assert by_timer["status_history"][1:] == by_message["status_history"][1:]
    assert [t[0] for t in message_told] == ["ivan@romashka.ru"] * 2  # resolved, closed
    assert timer_told[1:] == message_told[1:]
    assert "Закрыта" in message_told[1][2]
    for key in ("status", "closed_at", "resolution_seconds", "pending_until"):
        assert by_timer[key] == by_message[key], key


async def reopened_by(how: str, store) -> tuple[dict, list]:
    config = announcing()
    clock = Clock(datetime.now(timezone.utc))  # the CLI reads the system clock
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await resolve(store, config, number, clock.now)
    if how == "message":
        result = await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Опять"))
        assert result.action == "reopened"
    else:
        args = argparse.Namespace(number=number, status="open", until=None)
        assert await cli._cmd_status(args, config, store) == 0
    return await ticket(store, config, number, clock.now), await told(store, number)


async def test_a_reopen_by_message_and_by_the_cli_are_the_same(store, capsys):
    by_message, message_told = await reopened_by("message", store)
    by_cli, cli_told = await reopened_by("cli", store)
    assert [(h["from"], h["to"]) for h in by_message["status_history"]] == \
        [(h["from"], h["to"]) for h in by_cli["status_history"]] == \
        [(None, "open"), ("open", "resolved"), ("resolved", "open")]
    assert message_told == cli_told
    assert [t[0] for t in cli_told] == ["ivan@romashka.ru"] * 2  # resolved, then open
    assert "Открыта" in cli_told[-1][2]
    for data in (by_message, by_cli):
        assert (data["status"], data["closed_at"]) == ("open", None)


async def test_a_quiet_pipeline_records_changes_but_queues_nothing(store, clock):
    config = announcing()
    loud = Pipeline(config, store, clock=clock)
    number = (await loud.ingest_email(mail())).ticket
    await resolve(store, config, number, clock.advance(hours=1))
    before = await told(store, number)
    quiet = Pipeline(config, store, clock=clock, quiet=True)
    reply = await quiet.ingest_email(mail(subject=f"Re: [#{number}]", body="Ещё"))
    assert reply.action == "reopened"
    assert await told(store, number) == before
    data = await ticket(store, config, number, clock.now)
    assert data["status_history"][-1]["to"] == "open"


@pytest.mark.parametrize("how", ["timer", "message"])
async def test_pending_returns_to_open_the_same_way(store, how):
    config = Config(notifications={"status_changes": ["open"]})
    clock = Clock()
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    until = clock.advance(hours=1).replace(hour=23)

    def pend(session):
        ticket = ticket_by_number(session, number, lock=True)
        status_service(config).request(session, ticket, "pending", clock.now, "test", until)
    await store.run(pend)
    clock.advance(days=1)
    if how == "timer":
        await store.run(run_due_timers, config, clock.now)
    else:
        await pipeline.ingest_email(mail(sender="olga@elsewhere.example",
                                         subject=f"Re: [#{number}]", body="Коллега"))
    data = await ticket(store, config, number, clock.now)
    assert [(h["from"], h["to"], h["at"], h["reason"]) for h in data["status_history"][1:]] \
        == [("open", "pending", clock.now.replace(day=23, hour=10).isoformat(), "test"),
            ("pending", "open", until.isoformat(), "timer")]
    assert [t[0] for t in await told(store, number)] == ["ivan@romashka.ru"]
