"""The status model at work (R-TS-3) and the ticket times (R-TS-4), on both backends:
transitions allowed by config only, history with times, pending returns to open when its
until time passes, resolved closes after its timeout, resolution time counts open time only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helpgate.config.schema import Config, StatusConfig, StatusState
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.timers import run_due_timers
from helpgate.ticketstore import statuses
from helpgate.ticketstore.queries import ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.mailfactory import TRUSTED_MX, mail, staff_mail


async def change(store, config, number, target, now, until=None):
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        statuses.check_transition(config.statuses, ticket, target, until, now)
        session.add(statuses.set_status(config.statuses, ticket, target, now, "test", until))
    await store.run(work)


async def detail(store, config, number, now):
    return await store.run(lambda s: ticket_detail(s, config, ticket_by_number(s, number), now))


async def test_history_and_resolution_time_count_only_open_time(store, config, clock):
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await change(store, config, number, "resolved", clock.advance(hours=2))
    clock.advance(days=3)  # resolved for three days: not resolution time
    reply = mail(subject=f"Re: [#{number}] Не работает принтер", body="Снова не печатает")
    assert (await pipeline.ingest_email(reply)).action == "reopened"
    await change(store, config, number, "resolved", clock.advance(hours=1))
    data = await detail(store, config, number, clock.advance(days=10))
    assert data["resolution_seconds"] == pytest.approx(3 * 3600)
    assert [(h["from"], h["to"]) for h in data["status_history"]] == [
        (None, "open"), ("open", "resolved"), ("resolved", "open"), ("open", "resolved")]
    assert data["status_history"][1]["at"] < data["status_history"][2]["at"]


async def test_first_response_time_is_the_first_staff_answer(store, clock):
    config = Config(mail={"authserv_ids": [TRUSTED_MX]})
    pipeline = Pipeline(config, store, clock=clock)
    from helpgate.ticketstore import people
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Anna", email="anna@helpgate.test", role="admin"), clock.now)
    number = (await pipeline.ingest_email(mail())).ticket
    clock.advance(minutes=45)
    answer = staff_mail(sender="anna@helpgate.test", subject=f"Re: [#{number}] принтер",
                  body="Перезагрузите его, пожалуйста.")
    assert (await pipeline.ingest_email(answer)).action == "comment"
    clock.advance(hours=5)
    await pipeline.ingest_email(staff_mail(sender="anna@helpgate.test",
                                           subject=f"Re: [#{number}]", body="Ещё ответ"))
    data = await detail(store, config, number, clock.now)
    assert data["first_response_seconds"] == 45 * 60


@pytest.mark.parametrize("target, until, message", [
    ("closed", None, "open -> closed is not allowed"),
    ("pending", None, "needs an until time"),
    ("open", None, "already open"),
    ("deleted", None, "unknown status"),
])
async def test_refused_transitions_change_nothing(store, config, clock, target, until, message):
    number = (await Pipeline(config, store, clock=clock).ingest_email(mail())).ticket
    with pytest.raises(statuses.StatusError, match=message):
        await change(store, config, number, target, clock.advance(minutes=1), until)
    data = await detail(store, config, number, clock.now)
    assert data["status"] == "open" and len(data["status_history"]) == 1


async def test_pending_returns_to_open_when_until_passes(store, config, clock):
    number = (await Pipeline(config, store, clock=clock).ingest_email(mail())).ticket
    until = clock.now + timedelta(days=2)
    await change(store, config, number, "pending", clock.advance(minutes=5), until)
    assert await store.run(run_due_timers, config, clock.advance(days=1)) == 0
    assert await store.run(run_due_timers, config, clock.advance(days=2)) == 1
    data = await detail(store, config, number, clock.now)
    assert data["status"] == "open"
    assert data["status_history"][-1]["at"] == until.isoformat()
    assert data["pending_until"] is None


async def test_resolved_closes_after_its_timeout_and_notifies(store, clock):
    states = [s if s.id != "resolved" else s.model_copy(update={"auto_after": "3d"})
              for s in StatusConfig().states]
    config = Config(statuses=StatusConfig(states=states),
                    notifications={"status_changes": ["closed"]})
    number = (await Pipeline(config, store, clock=clock).ingest_email(mail())).ticket
    await change(store, config, number, "resolved", clock.advance(hours=1))
    assert await store.run(run_due_timers, config, clock.advance(days=2)) == 0
    assert await store.run(run_due_timers, config, clock.advance(days=2)) == 1
    data = await detail(store, config, number, clock.now)
    assert data["status"] == "closed"
    from helpgate.ticketstore.queries import outbox_list
    kinds = [(row["kind"], row["to"]) for row in await store.run(outbox_list)]
    assert ("status", "ivan@romashka.ru") in kinds


async def test_a_message_sees_the_state_timers_owe_the_ticket(store, clock):
    """A reply after the auto-close time finds the ticket closed (final) even when no
    timer loop ran: it opens a new linked ticket instead of reopening."""
    states = [s if s.id != "resolved" else s.model_copy(update={"auto_after": "1d"})
              for s in StatusConfig().states]
    config = Config(statuses=StatusConfig(states=states))
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await change(store, config, number, "resolved", clock.advance(hours=1))
    clock.advance(days=2)
    result = await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Опять"))
    assert (result.action, result.previous_ticket) == ("new_ticket_after_window", number)
    old = await detail(store, config, number, clock.now)
    assert old["status"] == "closed" and old["linked_tickets"] == [result.ticket]


async def test_custom_waiting_state(store, clock):
    states = [*StatusConfig().states,
              StatusState(id="waiting", names={"en": "Waiting for you"}, next=["open"])]
    states[0] = states[0].model_copy(update={"next": ["pending", "resolved", "waiting"]})
    config = Config(statuses=StatusConfig(states=states, waiting_for_customer=["waiting"]))
    pipeline = Pipeline(config, store, clock=clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await change(store, config, number, "waiting", clock.advance(minutes=1))
    result = await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Вот ответ"))
    assert result.rules[-1] == "waiting_for_customer"
    assert (await detail(store, config, number, clock.now))["status"] == "open"
