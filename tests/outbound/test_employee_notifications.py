"""Employees are told by channel (issue 18 part 2, R-OUT-3, R-OUT-4, R-OUT-5): of new
tickets, customer comments (an assigned ticket's to its assignee alone), their
assignments and their tickets' status changes; by email, SMS to their directory phone,
and their own chat with the Telegram or VK bot; one outbox row per event, employee and
channel, never two on a replay; the author of an event is not told of it unless asked."""

from __future__ import annotations

from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.status_service import assignment_service, status_service
from helpgate.outbound.notify import Notifier
from helpgate.ticketstore import people
from helpgate.ticketstore.assignments import find_employee
from helpgate.ticketstore.models import AssignmentChange, OutboxMessage
from helpgate.ticketstore.repository import ticket_by_number
from tests.mailfactory import TRUSTED_MX, mail, staff_mail

STAFF = [{"name": "Anna", "email": "anna@helpgate.test", "phone": "+79990000001",
          "role": "admin", "telegram_id": 5100000001, "identities": {"vk": "610001"}},
         {"name": "Boris", "email": "boris@helpgate.test", "phone": "8 999 000-00-02",
          "role": "agent"},
         {"name": "Vera", "role": "agent", "telegram_id": 5100000003}]
EVERY_CHANNEL = {"employee_channels": ["email", "sms", "telegram", "vk"]}
SET_UP = {"sms": {"provider": "smsc", "login": "l", "password": "p"},
          "telegram": {"token": "123:abc"}, "vk": {"token": "vk1", "group_id": 1}}


def desk_config(notifications: dict | None = None, **sections) -> Config:
    return Config(notifications={**EVERY_CHANNEL, **(notifications or {})},
                  mail={"authserv_ids": [TRUSTED_MX]}, **{**SET_UP, **sections})


async def staffed(store, clock) -> None:
    await store.run(people.import_directory, people.DirectoryFile.model_validate(
        {"employees": STAFF, "contacts": [{"name": "Иван", "email": "ivan@romashka.ru"}]}),
        clock.now)


async def staff_rows(store, since: int = 0) -> list[tuple[str, str]]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(OutboxMessage.channel, OutboxMessage.recipient)
        .where(OutboxMessage.kind == "staff", OutboxMessage.id > since)
        .order_by(OutboxMessage.id))])


async def last_id(store) -> int:
    return await store.run(lambda s: s.scalar(select(OutboxMessage.id).order_by(
        OutboxMessage.id.desc()).limit(1))) or 0


async def assign(store, config, clock, number: int, who: str | None, by: str | None = None):
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        employee = find_employee(session, who) if who else None
        actor = find_employee(session, by).id if by else None
        return assignment_service(config).assign(session, ticket, employee, clock.now,
                                                 "test", actor) is not None
    return await store.run(work)


async def test_a_new_ticket_reaches_each_employee_on_each_channel_they_have(store, clock):
    await staffed(store, clock)
    config = desk_config()
    await Pipeline(config, store, clock).ingest_email(mail())
    assert sorted(await staff_rows(store)) == sorted([
        ("email", "anna@helpgate.test"), ("sms", "+79990000001"),
        ("telegram", "5100000001"), ("vk", "610001"),
        ("email", "boris@helpgate.test"), ("sms", "8 999 000-00-02"),
        ("telegram", "5100000003")])
    # The words alone on a messenger and by SMS; the mail keeps its reply address.
    rows = await store.run(lambda s: {r.channel + r.recipient: r for r in s.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == "staff"))})
    assert "Принтер не печатает" in rows["sms+79990000001"].content
    assert "Reply-To" not in rows["telegram5100000001"].headers or \
        rows["telegram5100000001"].headers["Reply-To"] != \
        rows["emailanna@helpgate.test"].headers["Reply-To"]
    assert "+" in rows["emailanna@helpgate.test"].headers["Reply-To"]


async def test_channels_helpgate_cannot_send_on_are_left_out(store, clock):
    await staffed(store, clock)
    config = Config(notifications=EVERY_CHANNEL)  # no SMS gateway, no bot tokens
    await Pipeline(config, store, clock).ingest_email(mail())
    assert await staff_rows(store) == [("email", "anna@helpgate.test"),
                                       ("email", "boris@helpgate.test")]


async def test_events_and_the_employees_list_choose_who_hears(store, clock):
    await staffed(store, clock)
    quiet = desk_config({"employee_events": ["customer_comment"],
                         "employees": ["boris@helpgate.test"],
                         "employee_channels": ["email", "sms"]})
    pipeline = Pipeline(quiet, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    assert await staff_rows(store) == []
    await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Ещё вопрос"))
    assert await staff_rows(store) == [("email", "boris@helpgate.test"),
                                       ("sms", "8 999 000-00-02")]


async def test_an_assigned_tickets_comments_go_to_its_assignee_alone(store, clock):
    await staffed(store, clock)
    config = desk_config({"employee_channels": ["email", "telegram"]})
    pipeline = Pipeline(config, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    start = await last_id(store)
    assert await assign(store, config, clock, number, "boris@helpgate.test")
    # Boris hears of the assignment; nobody else does.
    assert await staff_rows(store, start) == [("email", "boris@helpgate.test")]
    start = await last_id(store)
    await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Ещё вопрос"))
    assert await staff_rows(store, start) == [("email", "boris@helpgate.test")]
    # assigned_only = false: the whole list, as on an unassigned ticket.
    wide = desk_config({"employee_channels": ["email", "telegram"], "assigned_only": False})
    start = await last_id(store)
    await Pipeline(wide, store, clock).ingest_email(
        mail(subject=f"Re: [#{number}]", body="И ещё"))
    assert sorted(await staff_rows(store, start)) == [
        ("email", "anna@helpgate.test"), ("email", "boris@helpgate.test"),
        ("telegram", "5100000001"), ("telegram", "5100000003")]


async def test_assignment_is_told_once_and_not_to_who_took_it_themselves(store, clock):
    await staffed(store, clock)
    config = desk_config({"employee_channels": ["telegram", "sms"]})
    number = (await Pipeline(config, store, clock).ingest_email(mail())).ticket
    start = await last_id(store)
    await assign(store, config, clock, number, "anna@helpgate.test", by="boris@helpgate.test")
    told = await staff_rows(store, start)
    assert told == [("telegram", "5100000001"), ("sms", "+79990000001")]
    text = await store.run(lambda s: s.scalar(select(OutboxMessage.content).where(
        OutboxMessage.id > start).limit(1)))
    assert text == f"Обращение {number} «Не работает принтер» назначено вам (Boris)." or \
        text == f"Request {number} \"Не работает принтер\" is assigned to you (Boris)."

    # The same event told again (a replay) queues nothing more: one key per event,
    # employee and channel.
    def again(session):
        ticket = ticket_by_number(session, number)
        change = session.scalars(select(AssignmentChange)).all()[-1]
        Notifier(config).assignment(session, ticket, change, clock.now)
    await store.run(again)
    assert await staff_rows(store, start) == told
    # Taking a ticket oneself is not news, unless notify_author.
    start = await last_id(store)
    await assign(store, config, clock, number, "boris@helpgate.test", by="boris@helpgate.test")
    assert await staff_rows(store, start) == []
    loud = desk_config({"employee_channels": ["telegram", "sms"], "notify_author": True})
    await assign(store, loud, clock, number, "anna@helpgate.test", by="anna@helpgate.test")
    assert await staff_rows(store, start) == told


async def test_the_assignee_hears_of_status_changes_but_not_of_a_reopen_twice(store, clock):
    await staffed(store, clock)
    config = desk_config({"employee_channels": ["email"],
                          "employee_status_changes": ["resolved", "open"]})
    pipeline = Pipeline(config, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await assign(store, config, clock, number, "boris@helpgate.test")
    start = await last_id(store)

    async def move(target: str, reason: str = "test"):
        def work(session):
            ticket = ticket_by_number(session, number, lock=True)
            status_service(config).request(session, ticket, target, clock.now, reason)
        await store.run(work)
    # A reason that reads like the pipeline's is still a person's change: told.
    await move("resolved", "comment: message from ivan@romashka.ru")
    rows = await staff_rows(store, start)
    assert rows == [("email", "boris@helpgate.test")]
    subject = await store.run(lambda s: s.scalar(select(OutboxMessage.subject).where(
        OutboxMessage.kind == "staff", OutboxMessage.id > start)))
    assert f"[#{number}]" in subject and ("Решена" in subject or "Resolved" in subject)
    # The customer writes again: the ticket reopens; Boris hears once, of the message.
    start = await last_id(store)
    clock.advance(hours=1)
    await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body="Не помогло"))
    rows = await store.run(lambda s: s.execute(select(OutboxMessage.recipient,
                                                      OutboxMessage.dedupe_key).where(
        OutboxMessage.kind == "staff", OutboxMessage.id > start)).all())
    assert [(r, key.split(":")[1].rstrip("0123456789")) for r, key in rows] == \
        [("boris@helpgate.test", "comment")]
    # Without an assignee, nobody is told of a status change (the topic says it).
    await assign(store, config, clock, number, None)
    start = await last_id(store)
    await move("resolved")
    assert await staff_rows(store, start) == []


async def test_an_employee_who_opens_a_ticket_is_not_told_of_it(store, clock):
    await staffed(store, clock)
    for notify_author, expected in [
            (False, [("email", "boris@helpgate.test")]),
            (True, [("email", "anna@helpgate.test"), ("email", "boris@helpgate.test")])]:
        config = desk_config({"employee_channels": ["email"], "notify_author": notify_author})
        start = await last_id(store)
        await Pipeline(config, store, clock).ingest_email(staff_mail(
            subject=f"Внутренняя задача {notify_author}"), ticket_type="internal")
        assert await staff_rows(store, start) == expected
