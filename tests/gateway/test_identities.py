"""A sender is an identity (channel, id), not only an address (issue #17, part 1): people
are found by their messenger ids, a new customer on a messenger becomes a contact with
that identity, the throttle counts per identity, and a kept record is read again by its
own channel, never as a mail. Through the pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from helpgate.channels.base import InboundMessage
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.threading.context import Action
from helpgate.ticketstore import people
from helpgate.ticketstore.models import Comment, Contact, Identity, Ticket
from helpgate.ticketstore.models import InboundMessage as InboundRow

_serial = iter(range(1, 10**6))


def chat(clock, user: str, text: str, name: str = "Пётр", chat: bool = False
         ) -> InboundMessage:
    """What a messenger adapter hands over: a record of its own, not a mail (`chat`: a
    line of a conversation, which continues the sender's latest ticket)."""
    number = next(_serial)
    raw = json.dumps({"update_id": number, "from": user, "text": text}).encode()
    return InboundMessage(channel="telegram", raw=raw, dedupe_key=f"update:{number}",
                          received_at=clock.now, sender_id=user, sender_name=name, text=text,
                          chat=chat)


async def comments_by(store, column):
    return await store.run(lambda s: s.execute(select(column).order_by(Comment.id)).scalars()
                           .all())


async def test_a_new_customer_on_a_messenger_becomes_a_contact_with_that_identity(
        pipeline, store, clock):
    first = await pipeline.ingest(chat(clock, "4200000001", "Не печатает принтер"))
    second = await pipeline.ingest(chat(clock, "4200000001", "И сканер тоже"))
    assert first.action == second.action == Action.NEW_TICKET
    contacts = await store.run(lambda s: s.execute(select(Contact.id, Contact.name)).all())
    assert [tuple(c) for c in contacts] == [(contacts[0].id, "Пётр")]
    assert await comments_by(store, Comment.contact_id) == [contacts[0].id] * 2
    identity = await store.run(lambda s: s.execute(
        select(Identity.kind, Identity.channel, Identity.external_id)).one())
    assert tuple(identity) == ("contact", "telegram", "4200000001")


async def test_people_are_found_by_their_messenger_ids(pipeline, store, clock):
    directory = people.DirectoryFile.model_validate({
        "contacts": [{"name": "Иван", "email": "ivan@romashka.ru", "telegram_id": 11}],
        "employees": [{"name": "Анна", "email": "anna@helpgate.test", "role": "admin",
                       "identities": {"telegram": "22"}}]})
    await store.run(people.import_directory, directory, clock.now)
    from_contact = await pipeline.ingest(chat(clock, "11", "Здравствуйте"))
    assert "sender_identity" in from_contact.rules
    contact_id = await store.run(lambda s: s.scalar(
        select(Contact.id).where(Contact.email == "ivan@romashka.ru")))
    assert await comments_by(store, Comment.contact_id) == [contact_id]
    assert await store.run(lambda s: s.scalar(select(func.count()).select_from(Contact))) == 1
    # The same number on another channel is somebody else.
    stranger = InboundMessage(channel="vk", raw=b"{}", dedupe_key="vk:1",
                              received_at=clock.now, sender_id="11", text="Привет")
    assert "sender_identity" not in (await pipeline.ingest(stranger)).rules


async def test_the_throttle_counts_per_identity(store, clock):
    pipeline = Pipeline(Config(threading={"throttle_max": 2}), store, clock)
    actions = [(await pipeline.ingest(chat(clock, "7", f"сообщение {n}"))).action
               for n in range(3)]
    assert actions == [Action.NEW_TICKET, Action.NEW_TICKET, Action.QUARANTINED]
    assert (await pipeline.ingest(chat(clock, "8", "другой человек"))).action == \
        Action.NEW_TICKET
    senders = await store.run(lambda s: s.execute(
        select(InboundRow.sender).order_by(InboundRow.id)).scalars().all())
    assert senders == ["telegram:7"] * 3 + ["telegram:8"]


async def test_a_kept_record_is_read_again_by_its_own_channel(pipeline, store, clock):
    """A record kept but never decided (a crash between the two) is decided at start-up
    by its channel's parser: with no such channel registered it is quarantined with that
    reason, never parsed as a mail."""
    # A channel no longer registered (Telegram reads its own records: tests/channels/
    # test_telegram.py).
    message = replace(chat(clock, "9", "From: forged@romashka.ru\r\n\r\nnot a mail"),
                      channel="pigeon")

    def keep_only(session):
        from helpgate.ticketstore.repository import keep_raw
        return keep_raw(session, message, message.sender_key)
    inbound_id, _ = await store.run(keep_only)
    [result] = await pipeline.process_received()
    assert result.inbound == inbound_id
    assert result.action == Action.QUARANTINED
    assert result.reason == "no channel 'pigeon' is known to read this message"


async def test_a_chat_continues_its_ticket_and_a_closed_one_is_followed_up(
        pipeline, store, clock):
    first = await pipeline.ingest(chat(clock, "5", "Не печатает принтер", chat=True))
    more = await pipeline.ingest(chat(clock, "5", "Модель HP 1020", chat=True))
    assert (first.action, more.action) == (Action.NEW_TICKET, Action.COMMENT)
    assert more.ticket == first.ticket and "conversation" in more.rules

    def close(session):
        ticket = session.scalar(select(Ticket).where(Ticket.number == first.ticket))
        pipeline.statuses.change(session, ticket, "closed", clock.now, "test")
    await store.run(close)
    clock.advance(hours=1)
    after = await pipeline.ingest(chat(clock, "5", "Опять не печатает", chat=True))
    assert after.action == Action.NEW_TICKET_AFTER_WINDOW
    assert after.previous_ticket == first.ticket
    last = await pipeline.ingest(chat(clock, "5", "Спасибо", chat=True))
    assert (last.action, last.ticket) == (Action.COMMENT, after.ticket)
    # Another customer's chat is their own.
    other = await pipeline.ingest(chat(clock, "6", "Здравствуйте", chat=True))
    assert other.action == Action.NEW_TICKET and other.ticket not in (first.ticket,
                                                                      after.ticket)


async def test_a_shared_phone_binds_the_messenger_user_to_the_known_customer(
        pipeline, store, clock):
    """One customer, one history (R-TH-10): the contact a messenger made for an unknown
    user is merged into the directory's contact with the same phone (last 10 digits,
    whatever the prefix), tickets and identity included; `helpgate tickets --phone` then
    shows the mail and the messenger tickets together."""
    from dataclasses import replace

    from helpgate.ticketstore.queries import ticket_list
    from tests.mailfactory import mail
    directory = people.DirectoryFile.model_validate({"contacts": [
        {"name": "Иван", "email": "ivan@romashka.ru", "phone": "+7 (916) 123-45-67"}]})
    await store.run(people.import_directory, directory, clock.now)
    by_mail = await pipeline.ingest_email(mail(body="Письмом"))
    stranger = await pipeline.ingest(chat(clock, "31", "Из телеграма"))
    shared = replace(chat(clock, "31", "Мой номер"), sender_phone="89161234567")
    bound = await pipeline.ingest(shared)
    assert "sender_identity" in bound.rules
    contacts = await store.run(lambda s: s.execute(select(Contact.email, Contact.phone))
                               .all())
    assert [tuple(c) for c in contacts] == [("ivan@romashka.ru", "+7 (916) 123-45-67")]
    history = await store.run(ticket_list, pipeline.config, None, None, "8 916 123 45 67")
    assert sorted(t["number"] for t in history) == sorted(
        {by_mail.ticket, stranger.ticket, bound.ticket})
    assert await store.run(ticket_list, pipeline.config, None, None, "+7 999 123-45-67") == []


async def test_an_email_given_on_a_messenger_binds_or_is_kept(pipeline, store, clock):
    from dataclasses import replace
    alone = replace(chat(clock, "41", "Вот почта"), sender_email="Petr@Example.com")
    await pipeline.ingest(alone)
    emails = await store.run(lambda s: s.execute(select(Contact.email)).scalars().all())
    assert emails == ["petr@example.com"]
    # A second messenger account giving the same address is the same customer.
    await pipeline.ingest(chat(clock, "42", "Второй аккаунт"))
    await pipeline.ingest(replace(chat(clock, "42", "Это я"), sender_email="petr@example.com"))
    owners = await store.run(lambda s: s.execute(
        select(Identity.external_id, Contact.email).join(
            Contact, Contact.id == Identity.contact_id).order_by(Identity.external_id)).all())
    assert [tuple(o) for o in owners] == [("41", "petr@example.com"),
                                          ("42", "petr@example.com")]
    assert await store.run(lambda s: s.scalar(select(func.count()).select_from(Contact))) == 1


async def test_a_chat_ticket_is_named_by_its_first_line_never_by_a_typed_marker(
        pipeline, store, clock):
    """A chat has no subject: the ticket takes the first line. A marker typed there is
    words, not a reference: it neither joins that ticket nor stays in the subject."""
    victim = await pipeline.ingest(chat(clock, "71", "Чужая заявка", chat=True))
    typed = await pipeline.ingest(chat(
        clock, "72", f"[#{victim.ticket}] Не печатает принтер\nПодробности", chat=True))
    assert typed.action == Action.NEW_TICKET and typed.ticket != victim.ticket
    subjects = await store.run(lambda s: s.execute(
        select(Ticket.number, Ticket.subject).order_by(Ticket.number)).all())
    assert [tuple(t) for t in subjects] == [(victim.ticket, "Чужая заявка"),
                                            (typed.ticket, "Не печатает принтер")]


async def test_an_edit_rewrites_its_comment_and_keeps_the_history(pipeline, store, clock):
    from dataclasses import replace
    first = await pipeline.ingest(replace(chat(clock, "81", "Не печатет", chat=True),
                                          message_id="telegram:81:1"))
    for text in ("Не печатает", "Не печатает принтер"):
        clock.advance(minutes=1)
        edit = await pipeline.ingest(replace(chat(clock, "81", text, chat=True),
                                             message_id="telegram:81:1",
                                             edit_of="telegram:81:1"))
        assert (edit.action, edit.ticket, edit.comment, edit.rules) == (
            Action.COMMENT, first.ticket, first.comment, ["edit"])
    texts = await store.run(lambda s: s.execute(select(Comment.text, Comment.decision)).all())
    [(text, decision)] = texts
    assert text == "Не печатает принтер"
    assert [e["text"] for e in decision["edits"]] == ["Не печатет", "Не печатает"]
    # An edit of a message never stored here is a message like any other.
    orphan = await pipeline.ingest(replace(chat(clock, "81", "Старое", chat=True),
                                           message_id="telegram:81:0",
                                           edit_of="telegram:81:0"))
    assert orphan.action == Action.COMMENT and orphan.comment != first.comment


@pytest.mark.pipeline_errors_expected
async def test_a_held_message_that_cannot_be_decided_is_quarantined_not_stuck(
        pipeline, store, clock, monkeypatch):
    """A chat message held for the customer's choice whose decision then fails goes to
    quarantine with the reason, rather than failing every sweep and holding up others."""
    from helpgate.ticketstore import chats
    first = await pipeline.ingest(chat(clock, "91", "Принтер", chat=True))
    second = await pipeline.ingest(chat(clock, "91", "VPN"))     # a fresh start (/new)
    assert first.ticket != second.ticket
    await store.run(chats.choose, "telegram", "91", None)        # no choice remembered
    held = await pipeline.ingest(chat(clock, "91", "Ещё вопрос", chat=True))
    assert held.action == Action.HELD

    def broken(*args, **kwargs):
        raise RuntimeError("database trouble")
    monkeypatch.setattr(pipeline, "_decide_held", broken)
    clock.advance(minutes=11)
    [result] = await pipeline.process_held()
    assert result.action == Action.QUARANTINED
    state = await store.run(lambda s: s.execute(select(
        InboundRow.state, InboundRow.reason).where(InboundRow.id == held.inbound)).one())
    assert state.state == "quarantined" and "database trouble" in state.reason
    assert await pipeline.process_held() == []
