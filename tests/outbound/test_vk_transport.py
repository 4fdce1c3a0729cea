"""Staff answers reach a VK customer (R-OUT-1) through the outbox and the real vk-api
against the local VK fake: a retry never sends twice (random_id from the outbox row),
rate limits are retried, a user who refuses messages parks the row with the reason."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpgate.channels.vk.parse import envelope, parse
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.base import Outgoing, OutgoingFile
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.vk import VkTransport, random_id, split
from helpgate.ticketstore import people
from helpgate.ticketstore.models import OutboxMessage
from tests.fakes.vk import FakeVK

GROUP = 4242
TOKEN = "vk-group-token"


# vk-api waits 1/20 s before each call of a community token; the fake needs none.
pytestmark = pytest.mark.usefixtures("no_vk_rate_sleep")


@pytest.fixture
async def vk():
    async with FakeVK(group_id=GROUP, token=TOKEN) as fake:
        yield fake


def config_for(vk: FakeVK, token: str = TOKEN) -> Config:
    return Config(vk={"token": token, "group_id": GROUP, "api_base_url": vk.base_url},
                  notifications={"employees": "none", "acknowledge_new_tickets": False},
                  outbox={"retry_after": "1m"})


@pytest.fixture
async def transport(vk):
    vk.user(42)  # a customer who wrote to the community: VK lets it answer
    sender = VkTransport(config_for(vk).vk)
    yield sender
    await sender.close()


def outgoing(text: str = "Ответ", row: int = 1, recipient: str = "42", **values) -> Outgoing:
    return Outgoing(id=row, channel="vk", kind="comment", recipient=recipient,
                    subject=None, text="mail form: " + text, content=text, **values)


async def answered_ticket(vk, store, clock, config, text="Заменили картридж."):
    """A VK customer's ticket with a staff answer queued for them."""
    await store.run(people.import_directory, people.DirectoryFile.model_validate(
        {"employees": [{"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}]}),
        clock.now)
    event = vk.send_text(42, "Не печатает принтер")
    ticket = (await Pipeline(config, store, clock).ingest(
        parse(envelope(event), clock.now))).ticket
    await store.run(staff_reply, config, ticket, text, True, None, "cli", clock.now)
    return await store.run(lambda s: s.scalar(
        select(OutboxMessage.id).where(OutboxMessage.channel == "vk")))


async def row_state(store, row_id):
    return await store.run(lambda s: tuple(s.execute(
        select(OutboxMessage.state, OutboxMessage.last_error)
        .where(OutboxMessage.id == row_id)).one()))


async def test_a_staff_answer_reaches_the_customer(vk, store, clock):
    config = config_for(vk)
    row = await answered_ticket(vk, store, clock, config)
    sender = VkTransport(config.vk)
    try:
        assert await OutboxWorker(store, config, {"vk": sender}, clock).run_once() == 1
    finally:
        await sender.close()
    assert [(s.peer_id, s.random_id, s.message) for s in vk.sent] == [
        (42, random_id(row, 0), "Заменили картридж.")]
    assert (await row_state(store, row))[0] == "sent"


@pytest.mark.parametrize(("code", "after"), [(9, False), (10, True)])
async def test_a_retry_after_flood_control_or_a_lost_answer_sends_once(
        vk, store, clock, code, after):
    """Error 9 before sending, or the message sent and its answer lost (error 10): the
    row is retried, with the same random_id, and the customer gets one message."""
    config = config_for(vk)
    row = await answered_ticket(vk, store, clock, config)
    vk.fail_next("messages.send", code, after=after)
    sender = VkTransport(config.vk)
    worker = OutboxWorker(store, config, {"vk": sender}, clock)
    try:
        await worker.run_once()
        state, error = await row_state(store, row)
        assert state == "queued" and f"[{code}]" in error
        clock.advance(minutes=2)
        await worker.run_once()
    finally:
        await sender.close()
    assert (await row_state(store, row))[0] == "sent"
    assert [(s.random_id, s.message) for s in vk.sent] == [(random_id(row, 0),
                                                            "Заменили картридж.")]
    assert vk.requests["messages.send"] == 2


async def test_a_user_who_refuses_messages_parks_the_row_with_the_reason(vk, store, clock):
    config = config_for(vk)
    row = await answered_ticket(vk, store, clock, config)
    vk.block(42)
    sender = VkTransport(config.vk)
    try:
        await OutboxWorker(store, config, {"vk": sender}, clock).run_once()
    finally:
        await sender.close()
    state, error = await row_state(store, row)
    assert state == "parked"
    assert error == ("cannot write to this VK user: the user has not allowed messages "
                     "from the community (VK error 901)")
    assert vk.sent == []


async def test_a_user_who_refuses_messages_gets_the_answer_by_email(vk, store, clock,
                                                                    relay):
    """901 is for good: the customer's VK identity is marked unreachable and the answer
    goes by email (they gave one), said on the ticket."""
    from helpgate.outbound.email import EmailTransport
    from helpgate.ticketstore.models import Comment
    config = Config(vk={"token": TOKEN, "group_id": GROUP, "api_base_url": vk.base_url},
                    mail={"smtp": relay.smtp_config()},
                    notifications={"employees": "none", "acknowledge_new_tickets": False})
    await store.run(people.import_directory, people.DirectoryFile.model_validate(
        {"contacts": [{"name": "Пётр", "email": "petr@romashka.ru",
                       "identities": {"vk": "42"}}]}), clock.now)
    row = await answered_ticket(vk, store, clock, config)
    vk.block(42)
    sender = VkTransport(config.vk)
    try:
        worker = OutboxWorker(store, config, {"vk": sender, "email": EmailTransport(config)},
                              clock)
        while await worker.run_once():
            pass
    finally:
        await sender.close()
    assert vk.sent == []
    [mail] = relay.received
    assert mail.rcpt_tos == ["petr@romashka.ru"] and "Заменили картридж." in mail.text()
    assert (await row_state(store, row))[0] == "sent"
    notes = await store.run(lambda s: s.execute(select(Comment.text).where(
        Comment.author_kind == "system")).scalars().all())
    assert len(notes) == 1 and "VK error 901" in notes[0]


async def test_a_long_answer_goes_in_parts_each_with_its_own_random_id(vk, transport):
    text = ("слово " * 1500).strip()  # 8,999 characters
    assert (await transport.send(outgoing(text, row=7))).delivered
    assert [len(s.message) <= 4096 for s in vk.sent] == [True, True, True]
    assert " ".join(s.message for s in vk.sent) == text
    assert [s.random_id for s in vk.sent] == [random_id(7, i) for i in range(3)]
    # The same row again (a retry): VK drops every part.
    assert (await transport.send(outgoing(text, row=7))).delivered
    assert len(vk.sent) == 3


async def test_files_go_as_documents(vk, transport):
    files = (OutgoingFile("акт.pdf", "application/pdf", b"%PDF act"),
             OutgoingFile("log.txt", "text/plain", b"log lines"))
    assert (await transport.send(outgoing("Файлы", attachments=files))).delivered
    [sent] = vk.sent
    refs = sent.attachment.split(",")
    assert sent.message == "Файлы" and all(r.startswith(f"doc-{GROUP}_") for r in refs)
    assert [vk.attachment_data(r) for r in refs] == [b"%PDF act", b"log lines"]


async def test_vk_errors_map_to_the_outbox_outcomes(vk, transport):
    vk.fail_next("messages.send", 6, times=5)
    busy = await transport.send(outgoing())
    # vk-api's own retries of error 6 are bounded: the call, then two more.
    assert busy.temporary and "[6]" in busy.error
    assert vk.requests["messages.send"] == 3
    vk.fail_next("messages.send", 902)
    private = await transport.send(outgoing())
    assert not private.temporary and "privacy settings" in private.error
    stranger = await transport.send(outgoing(recipient="999"))
    assert not stranger.temporary and "901" in stranger.error
    await vk.go_down()
    away = await transport.send(outgoing())
    assert away.temporary and away.error.startswith("VK out of reach")
    assert vk.sent == []


async def test_a_refused_token_fails_for_good(vk):
    sender = VkTransport(config_for(vk, token="wrong").vk)
    try:
        result = await sender.send(outgoing())
    finally:
        await sender.close()
    assert not result.delivered and not result.temporary
    assert "set [vk] token" in result.error


def test_split_cuts_at_spaces_and_keeps_everything():
    assert split("короткий") == ["короткий"]
    assert split("") == []
    assert split("a" * 10, limit=4) == ["aaaa", "aaaa", "aa"]
    assert split("ab cd ef", limit=5) == ["ab cd", "ef"]
    assert len({random_id(1, 0), random_id(1, 1), random_id(2, 0)}) == 3
    assert all(0 < random_id(n, 0) < 2 ** 31 for n in range(100))
