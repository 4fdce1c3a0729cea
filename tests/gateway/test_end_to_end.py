"""The whole email loop with real servers (issue "Email in and out for real"): a running
gateway with our SMTP endpoint, a Dovecot mailbox and an aiosmtpd relay.

A customer's mail becomes a ticket and its acknowledgement reaches the relay with the
marker and separator; the customer's client-style reply to that very acknowledgement
threads back with only the new words; an employee's answer to the staff notification
(through its Reply-To, her reply address for the ticket) becomes her public comment and
reaches the customer without the quoted notification, while the same words under her
forged From reach only her; a private comment reaches no one; the relay down means
queued, then delivered.
"""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from helpgate.config.schema import Config
from helpgate.gateway.replies import staff_reply
from helpgate.gateway.run import Gateway
from helpgate.ticketstore import people
from helpgate.ticketstore.queries import outbox_list, ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.mailfactory import mail
from tests.mailservers import Received, Relay
from tests.waiting import eventually

SEPARATOR = "##- Пожалуйста, пишите ответ выше этой строки -##"


@pytest.fixture
async def desk(store, dovecot, relay):
    """A running gateway: endpoint on a free port, the Dovecot mailbox, the relay."""
    await store.run(people.import_directory, people.DirectoryFile(
        contacts=[people.ContactEntry(name="Иван Петров", email="ivan@romashka.ru")],
        employees=[people.EmployeeEntry(name="Анна", email="anna@helpgate.test",
                                        role="admin"),
                   people.EmployeeEntry(name="Вера", email="vera@helpgate.test")]),
        _now())
    config = Config(fallback_language="ru",  # a Russian team: staff mail in Russian
                    mail={"endpoint": {"port": 0}, "smtp": relay.smtp_config(),
                          "imap": [dovecot.imap_config(idle=True)]},
                    outbox={"poll_interval": 0.2, "retry_after": "1s"})
    gateway = Gateway(config, store, timer_interval=0.5)
    running = asyncio.create_task(gateway.serve())
    endpoint, mailbox = gateway.channels
    await eventually(lambda: endpoint.port is not None and mailbox.connected.is_set())
    yield gateway
    gateway.stop.set()
    await asyncio.wait_for(running, 20)


def _now():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


def send_smtp(port: int, sender: str, raw: bytes,
              to: str = "support@helpgate.localhost") -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(sender, [to], raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def sent_to(relay: Relay, address: str) -> list[Received]:
    return [r for r in relay.received if r.rcpt_tos == [address]]


def reply_to(received: Received, sender: str, new_text: str) -> bytes:
    """What a mail client makes of "Reply": Re: subject, threading headers, the text
    above an attribution line and the original quoted with "> "."""
    original = received.message
    quoted = "\n".join("> " + line for line in received.text().splitlines())
    body = (f"{new_text}\n\nOn Mon, 23 Nov 2026 at 10:05, Support "
            f"<support@helpgate.localhost> wrote:\n\n{quoted}\n")
    return mail(sender=sender, subject=f"Re: {original['Subject']}", body=body,
                to=original["Reply-To"] or original["From"], in_reply_to=original["Message-ID"],
                references=f"{original.get('References', '')} {original['Message-ID']}".strip())


async def detail(store, number: int) -> dict:
    return await store.run(lambda s: ticket_detail(s, Config(), ticket_by_number(s, number),
                                                   _now()))


async def test_the_whole_email_loop(store, dovecot, relay, desk):
    endpoint = desk.channels[0]
    # 1. A customer writes to the support address; their mail server delivers to us.
    await asyncio.to_thread(send_smtp, endpoint.port, "ivan@romashka.ru",
                            mail(subject="Не печатает принтер", body="Принтер молчит."))
    [ack] = await eventually(lambda: sent_to(relay, "ivan@romashka.ru"))
    assert ack.message["Subject"] == "[#1] Не печатает принтер"
    assert ack.text().startswith(SEPARATOR)
    assert ack.message["Auto-Submitted"] == "auto-replied"
    [notice] = await eventually(lambda: sent_to(relay, "vera@helpgate.test"))
    assert notice.message["Subject"].startswith("[#1]")

    # 2. The customer answers the acknowledgement; it arrives in the IMAP mailbox.
    await asyncio.to_thread(dovecot.deliver, reply_to(ack, "ivan@romashka.ru",
                                                      "Модель HP LaserJet 1020."))
    ticket = await eventually(lambda: _comments(store, 2))
    assert ticket["comments"][1]["text"] == "Модель HP LaserJet 1020."
    assert ticket["comments"][1]["author"]["kind"] == "contact"

    # 3. An employee answers the staff notification from her own mailbox: her client
    # writes to the notification's Reply-To, her own reply address for this ticket.
    before = len(sent_to(relay, "ivan@romashka.ru"))
    assert notice.message["Reply-To"].startswith("support+")
    await asyncio.to_thread(send_smtp, endpoint.port, "vera@helpgate.test",
                            reply_to(notice, "vera@helpgate.test", "Заменим картридж сегодня."),
                            notice.message["Reply-To"])
    ticket = await eventually(lambda: _comments(store, 3))
    answer = ticket["comments"][2]
    assert (answer["text"], answer["author"]["email"], answer["public"]) == (
        "Заменим картридж сегодня.", "vera@helpgate.test", True)
    relayed = (await eventually(lambda: sent_to(relay, "ivan@romashka.ru")[before:]))[0]
    assert "Заменим картридж сегодня." in relayed.text()
    assert "Новое обращение" not in relayed.text() and "Принтер молчит" not in relayed.text()
    assert relayed.message["Subject"] == "[#1] Не печатает принтер"

    # 4. A private comment reaches no one.
    rows = len(await store.run(outbox_list))
    await store.run(staff_reply, desk.config, 1, "Клиент звонил.", False, None, "cli", _now())
    await asyncio.sleep(0.5)
    assert len(await store.run(outbox_list)) == rows
    assert len(relay.received) == len(await store.run(outbox_list))


async def _comments(store, n: int):
    ticket = await detail(store, 1)
    return ticket if len(ticket["comments"]) >= n else None


async def test_relay_down_then_back(store, relay, desk):
    await relay.stop()
    endpoint = desk.channels[0]
    await asyncio.to_thread(send_smtp, endpoint.port, "ivan@romashka.ru", mail())
    queued = await eventually(lambda: _rows_with_error(store))
    assert {row["state"] for row in queued} == {"queued"}
    await relay.start()
    await eventually(lambda: _all_sent(store), within=20)
    assert sorted(r.rcpt_tos[0] for r in relay.received) == [
        "anna@helpgate.test", "ivan@romashka.ru", "vera@helpgate.test"]


async def _rows_with_error(store):
    rows = await store.run(outbox_list)
    return rows if rows and all(row["last_error"] for row in rows) else None


async def _all_sent(store):
    rows = await store.run(outbox_list)
    return rows and all(row["state"] == "sent" for row in rows)


async def test_a_forged_staff_answer_reaches_only_the_employee(store, relay, desk):
    """Issue #15: anyone can write Vera's From and the ticket's marker; the customer must
    not get it as staff's answer. Vera gets a notice at her own address, not the
    Reply-To the forger set."""
    endpoint = desk.channels[0]
    await asyncio.to_thread(send_smtp, endpoint.port, "ivan@romashka.ru",
                            mail(subject="Не печатает принтер", body="Принтер молчит."))
    await eventually(lambda: sent_to(relay, "ivan@romashka.ru"))
    await eventually(lambda: sent_to(relay, "vera@helpgate.test"))
    forged = mail(sender="vera@helpgate.test", subject="Re: [#1] Не печатает принтер",
                  body="Оплатите счёт по ссылке http://evil.example/pay",
                  headers={"Reply-To": "attacker@evil.example"})
    await asyncio.to_thread(send_smtp, endpoint.port, "vera@helpgate.test", forged)
    [notice] = await eventually(lambda: sent_to(relay, "vera@helpgate.test")[1:])
    assert "evil.example/pay" in notice.text()  # she sees what was sent in her name
    assert notice.message["Subject"].startswith("[#1] Ваше письмо не отправлено клиенту")
    ticket = await detail(store, 1)
    assert ticket["comments"][1]["public"] is False and ticket["comments"][1]["unverified"]
    await eventually(lambda: _all_sent(store))
    assert len(sent_to(relay, "ivan@romashka.ru")) == 1  # the acknowledgement only
    assert sent_to(relay, "attacker@evil.example") == []
