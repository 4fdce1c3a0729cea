"""Staff answers reach a Telegram customer in their chat (R-OUT-1), through the outbox and
the real aiogram against the fake Bot API: a rate limit is waited out as Telegram asks and
never sends twice, a blocked bot sends the message by the customer's next channel (or
parks it with the reason), a long answer comes in parts. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.base import Outgoing, OutgoingFile
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.telegram import TelegramTransport, split_text, transport
from helpgate.ticketstore import people
from helpgate.ticketstore.models import OutboxMessage
from helpgate.ticketstore.outbox import DeliveryResult, record
from tests.gateway.test_identities import chat

ANNA = {"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}
CUSTOMER = 4200000001



@pytest.fixture
def config(tg) -> Config:
    return Config(telegram={"token": tg.token, "api_base_url": tg.base_url},
                  notifications={"employees": "none", "acknowledge_new_tickets": False},
                  outbox={"retry_after": "1m"})


@pytest.fixture
async def sender(config):
    found = transport(config)
    yield found
    await found.close()


async def answered(store, config, clock, tg, text: str) -> int:
    """A ticket from the Telegram customer, and staff's public answer to it queued."""
    await store.run(people.import_directory,
                    people.DirectoryFile.model_validate({"employees": [ANNA]}), clock.now)
    tg.user(CUSTOMER, "Пётр")
    ticket = (await Pipeline(config, store, clock).ingest(
        chat(clock, str(CUSTOMER), "Не печатает принтер"))).ticket
    await store.run(staff_reply, config, ticket, text, True, None, "cli", clock.now)
    return ticket


async def answer_row(store):
    return await store.run(lambda s: s.execute(
        select(OutboxMessage.state, OutboxMessage.attempts, OutboxMessage.last_error,
               OutboxMessage.next_attempt_at).where(OutboxMessage.kind == "comment")).one())


async def test_a_staff_answer_is_delivered_to_the_customers_chat(
        store, config, clock, tg, sender):
    await answered(store, config, clock, tg, "Заменили картридж.")
    worker = OutboxWorker(store, config, {"telegram": sender}, clock)
    assert await worker.run_once() == 1
    assert [(m["chat_id"], m["text"]) for m in tg.sent] == [(CUSTOMER, "Заменили картридж.")]
    assert (await answer_row(store)).state == "sent"


async def test_a_rate_limit_is_waited_out_as_asked_and_sends_once(
        store, config, clock, tg, sender):
    await answered(store, config, clock, tg, "Ответ")
    tg.fail_next("sendMessage", 429, retry_after=300, times=2)
    worker = OutboxWorker(store, config, {"telegram": sender}, clock)
    await worker.run_once()
    row = await answer_row(store)
    assert (row.state, row.last_error) == ("queued", "Telegram rate limit: retry after 300 s")
    # Telegram asked for 5 minutes, longer than the outbox's own first wait (1 minute).
    assert row.next_attempt_at.replace(tzinfo=None) == clock.now.replace(tzinfo=None) + \
        timedelta(seconds=300)
    clock.advance(seconds=120)
    assert await worker.run_once() == 0          # not due yet: Telegram's wait holds
    for _ in range(2):
        clock.advance(hours=1)
        await worker.run_once()
    assert [m["text"] for m in tg.sent] == ["Ответ"]
    assert (await answer_row(store)).state == "sent"


async def test_a_blocked_bot_parks_the_answer_with_the_reason(
        store, config, clock, tg, sender):
    """A customer known only on Telegram who blocked the bot: nowhere else to go."""
    await answered(store, config, clock, tg, "Ответ")
    tg.block(CUSTOMER)
    await OutboxWorker(store, config, {"telegram": sender}, clock).run_once()
    row = await answer_row(store)
    assert row.state == "parked"
    assert "blocked the bot" in row.last_error and tg.sent == []


async def test_a_blocked_bot_sends_the_answer_by_email_instead(store, clock, tg, relay):
    """Issue #17: "bot was blocked" marks Telegram unreachable for the customer; the answer
    falls back to their email and the ticket says so."""
    from helpgate.outbound.email import EmailTransport
    from helpgate.ticketstore.models import Comment
    config = Config(telegram={"token": tg.token, "api_base_url": tg.base_url},
                    mail={"smtp": relay.smtp_config()},
                    notifications={"employees": "none", "acknowledge_new_tickets": False})
    await store.run(people.import_directory, people.DirectoryFile.model_validate(
        {"contacts": [{"name": "Пётр", "email": "petr@romashka.ru",
                       "telegram_id": CUSTOMER}]}), clock.now)
    await answered(store, config, clock, tg, "Заменили картридж.")
    tg.block(CUSTOMER)
    messenger = transport(config)
    try:
        worker = OutboxWorker(store, config, {"telegram": messenger,
                                              "email": EmailTransport(config)}, clock)
        while await worker.run_once():
            pass
    finally:
        await messenger.close()
    assert tg.sent == []
    [mail] = relay.received
    assert mail.rcpt_tos == ["petr@romashka.ru"] and "Заменили картридж." in mail.text()
    assert (await answer_row(store)).state == "sent"
    notes = await store.run(lambda s: s.execute(select(Comment.text).where(
        Comment.author_kind == "system")).scalars().all())
    assert len(notes) == 1 and "blocked the bot" in notes[0]


async def test_a_long_answer_arrives_in_parts_cut_at_line_breaks(
        store, config, clock, tg, sender):
    lines = [f"{n:03d} " + "ж" * 95 for n in range(50)]      # 50 lines of 100 characters
    await answered(store, config, clock, tg, "\n".join(lines))
    await OutboxWorker(store, config, {"telegram": sender}, clock).run_once()
    texts = [m["text"] for m in tg.sent]
    assert len(texts) == 2 and all(len(t) <= 4096 for t in texts)
    assert "\n".join(texts).splitlines() == lines


async def test_files_go_as_documents_and_a_failure_after_a_part_is_not_retried(tg, sender):
    message = Outgoing(id=1, channel="telegram", kind="comment", recipient=str(CUSTOMER),
                       subject=None, text="mail form", content="Счёт во вложении",
                       attachments=(OutgoingFile("счёт.pdf", "application/pdf", b"%PDF"),))
    tg.user(CUSTOMER, "Пётр")
    assert await sender.send(message) == DeliveryResult.ok()
    assert [(m["method"], m.get("filename"), m.get("data")) for m in tg.sent] == [
        ("sendMessage", None, None), ("sendDocument", "счёт.pdf", b"%PDF")]
    tg.fail_next("sendDocument", 502)
    result = await sender.send(message)
    assert (result.delivered, result.temporary) == (False, False)
    assert result.error.startswith("1 of 2 parts delivered, then: Telegram unreachable")
    unknown = await sender.send(Outgoing(id=2, channel="telegram", kind="comment",
                                         recipient="777", subject=None, text="hi"))
    assert (unknown.temporary, "chat 777 not found" in unknown.error) == (False, True)


def test_split_text_keeps_lines_whole_and_cuts_only_a_line_too_long():
    assert split_text("a\nb", 10) == ["a\nb"]
    assert split_text("aaaa\nbbbb\ncc", 10) == ["aaaa\nbbbb", "cc"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    # Telegram counts UTF-16 units: an emoji outside the BMP is two.
    assert split_text("😀" * 6, 10) == ["😀" * 5, "😀"]
    assert split_text("\n\n", 10) == []


def test_no_token_no_transport():
    assert transport(Config()) is None
    assert isinstance(transport(Config(telegram={"token": "1:a"})), TelegramTransport)


async def test_the_outbox_waits_at_least_as_long_as_asked(store, clock):
    """retry_after longer than the outbox's backoff wins; shorter, the backoff does."""
    config = Config(outbox={"retry_after": "1m"}).outbox

    def queued(session, key):
        row = OutboxMessage(dedupe_key=key, channel="telegram", kind="comment",
                            recipient="1", text="x", state="sending", attempts=1,
                            created_at=clock.now,
                            next_attempt_at=clock.now)
        session.add(row)
        session.flush()
        return row.id
    waits = []
    for asked in (600.0, 5.0, None):
        row_id = await store.run(queued, f"test:{asked}")
        await store.run(record, row_id, DeliveryResult.retry("slow down", asked), clock.now,
                        config)
        due = await store.run(lambda s, i=row_id: s.scalar(
            select(OutboxMessage.next_attempt_at).where(OutboxMessage.id == i)))
        waits.append((due.replace(tzinfo=None) - clock.now.replace(tzinfo=None))
                     .total_seconds())
    assert waits == [600.0, 60.0, 60.0]
