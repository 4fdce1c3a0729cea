"""A sender is an identity (channel, id), not only an address (issue #17, part 1): people
are found by their messenger ids, a new customer on a messenger becomes a contact with
that identity, the throttle counts per identity, and a kept record is read again by its
own channel, never as a mail. Through the pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import func, select

from helpgate.channels.base import InboundMessage
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.threading.context import Action
from helpgate.ticketstore import people
from helpgate.ticketstore.models import Comment, Contact, Identity
from helpgate.ticketstore.models import InboundMessage as InboundRow

_serial = iter(range(1, 10**6))


def chat(clock, user: str, text: str, name: str = "Пётр") -> InboundMessage:
    """What a messenger adapter hands over: a record of its own, not a mail."""
    number = next(_serial)
    raw = json.dumps({"update_id": number, "from": user, "text": text}).encode()
    return InboundMessage(channel="telegram", raw=raw, dedupe_key=f"update:{number}",
                          received_at=clock.now, sender_id=user, sender_name=name, text=text)


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
