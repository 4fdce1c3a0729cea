"""What employees and customers receive about a ticket, read at the real aiosmtpd relay
(R-OUT-2, R-GW-1, issue #15 items 3, 4 and 7): one thread per ticket for everyone, who
wrote and what changed, the files travelling both ways, each customer in their language."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore import people
from tests.mailfactory import mail
from tests.mailservers import Relay

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
ROOT = "<hg1.0@helpgate.localhost>"


def relay_config(relay: Relay, toml_mail: dict | None = None, **top) -> Config:
    # A Russian team: staff notifications in Russian, customers each in their language.
    top.setdefault("fallback_language", "ru")
    return Config(mail={"smtp": relay.smtp_config(), **(toml_mail or {})},
                  notifications={"employees": ["anna@helpgate.test"],
                                 "status_changes": ["resolved"]}, **top)


@pytest.fixture
async def desk(store, clock):
    await store.run(people.upsert_company, people.CompanyEntry(
        name="Romashka LLC", domains=["romashka.ru"], email="office@romashka.ru"), clock.now)
    await store.run(people.upsert_contact, people.ContactEntry(
        name="Ivan Petrov", email="ivan@romashka.ru", company="Romashka LLC"), clock.now)
    for name, address in (("Anna", "anna@helpgate.test"), ("Boris", "boris@helpgate.test")):
        await store.run(people.upsert_employee, people.EmployeeEntry(
            name=name, email=address, role="admin"), clock.now)
    return store


async def send_all(store, config, relay: Relay, clock) -> list:
    """Deliver what is due; the messages the relay got by this round."""
    before = len(relay.received)
    worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)
    while await worker.run_once():
        pass
    return [r.message for r in relay.received[before:]]


def with_files(sender: str, subject: str, body: str, files: dict[str, bytes],
               to: str = "support@helpgate.localhost") -> bytes:
    message = EmailMessage()
    message["From"], message["To"] = sender, to
    message["Subject"], message["Message-ID"] = subject, f"<{abs(hash(subject))}@client>"
    message.set_content(body)
    for name, data in files.items():
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return bytes(message)


def files_of(message) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


def body(message) -> str:
    # Text travels in canonical form (CRLF line ends) inside its transfer encoding.
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


# ------------------------------------------------------------------ threads and authors
async def test_staff_notifications_are_one_thread_and_say_who_wrote(desk, relay, clock):
    config = relay_config(relay)
    pipeline = Pipeline(config, desk, clock)
    await pipeline.ingest_email(mail(subject="Не печатает принтер"))
    [ack, first] = sorted(await send_all(desk, config, relay, clock),
                          key=lambda m: m["To"] != "ivan@romashka.ru")
    assert first["To"] == "anna@helpgate.test"
    assert first["References"] == ROOT and first["In-Reply-To"] == ROOT
    assert "Пишет: Ivan Petrov <ivan@romashka.ru>, Romashka LLC; канал: email" in body(first)
    await pipeline.ingest_email(mail(subject="Re: [#1] Не печатает принтер",
                                     body="Забыл: модель HP 1020."))
    [second] = await send_all(desk, config, relay, clock)
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split() == [ROOT, first["Message-ID"]]
    assert "Забыл: модель HP 1020." in body(second)


async def test_a_reopening_message_says_so_and_stays_in_the_thread(desk, relay, clock):
    config = relay_config(relay)
    pipeline = Pipeline(config, desk, clock)
    await pipeline.ingest_email(mail())
    await send_all(desk, config, relay, clock)
    await desk.run(staff_reply, config, 1, "Заменили картридж.", True, None, "cli", clock.now)
    from helpgate.ticketstore import statuses
    from helpgate.ticketstore.repository import ticket_by_number

    def resolve(session):
        ticket = ticket_by_number(session, 1, lock=True)
        change = statuses.set_status(config.statuses, ticket, "resolved", clock.now, "test")
        session.add(change)
        session.flush()
        from helpgate.outbound.notify import Notifier
        Notifier(config).status_change(session, ticket, change, clock.now)
    await desk.run(resolve)
    answer, notice = await send_all(desk, config, relay, clock)
    for customer_mail in (answer, notice):
        assert customer_mail["To"] == "ivan@romashka.ru"
        assert customer_mail["In-Reply-To"] and customer_mail["References"]
    await pipeline.ingest_email(mail(subject="Re: [#1] Не работает принтер",
                                     body="Опять не печатает."))
    [staff] = await send_all(desk, config, relay, clock)
    assert "Это сообщение открыло обращение снова (было: Решена)." in body(staff)
    assert staff["References"].split()[0] == ROOT


# ------------------------------------------------------------------------- attachments
def reply_address(messages: list) -> str:
    """Where the employee's answer goes: the staff notification's own Reply-To."""
    return next(m["Reply-To"] for m in messages if m["To"] == "anna@helpgate.test")


async def test_an_emailed_staff_answer_reaches_the_customer_with_its_pdf(desk, relay, clock):
    config = relay_config(relay)
    pipeline = Pipeline(config, desk, clock)
    await pipeline.ingest_email(mail())
    to = reply_address(await send_all(desk, config, relay, clock))
    await pipeline.ingest_email(with_files("anna@helpgate.test", "Re: [#1] Не работает",
                                           "Инструкция во вложении.",
                                           {"Инструкция по замене.pdf": PDF}, to=to))
    [answer] = await send_all(desk, config, relay, clock)
    assert answer["To"] == "ivan@romashka.ru"
    assert files_of(answer) == {"Инструкция по замене.pdf": PDF}
    assert "Инструкция во вложении." in body(answer)


async def test_staff_get_the_customers_files_listed_and_attached(desk, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, desk, clock).ingest_email(with_files(
        "ivan@romashka.ru", "Ошибка при печати", "Скриншот и журнал во вложении.",
        {"../../etc/passwd": b"root:x:0:0", "/tmp/\u2028log.pdf": PDF}))
    staff = [m for m in await send_all(desk, config, relay, clock)
             if m["To"] == "anna@helpgate.test"][0]
    assert files_of(staff) == {"etc_passwd": b"root:x:0:0", "tmp_log.pdf": PDF}
    text = body(staff)
    assert "Вложения (helpgate attachment get ID):" in text
    assert "- ../../etc/passwd (10 B, id 1)" in text


async def test_files_over_the_outgoing_limit_are_named_not_attached(desk, relay, clock):
    config = relay_config(relay, {"max_outgoing_attachments_size": "60B"})
    pipeline = Pipeline(config, desk, clock)
    await pipeline.ingest_email(mail())
    to = reply_address(await send_all(desk, config, relay, clock))
    await pipeline.ingest_email(with_files(
        "anna@helpgate.test", "Re: [#1]", "Два файла.", {"a.pdf": PDF, "b.pdf": PDF}, to=to))
    [answer] = await send_all(desk, config, relay, clock)
    assert files_of(answer) == {"a.pdf": PDF}
    assert ("[Вложение «b.pdf» (45 B) не приложено к письму: вложения одного письма не "
            "могут быть больше 60 B.]") in body(answer)


# ---------------------------------------------------------------------------- language
async def test_staff_are_written_to_in_the_teams_language_whatever_the_customer_writes(
        desk, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, desk, clock).ingest_email(mail(subject="Printer",
                                                          body="It does not print."))
    sent = await send_all(desk, config, relay, clock)
    [staff] = [m for m in sent if m["To"] == "anna@helpgate.test"]
    [customer] = [m for m in sent if m["To"] == "ivan@romashka.ru"]
    assert "Пишет: Ivan Petrov" in body(staff)
    assert "Please type your reply above this line" in body(customer)


@pytest.mark.parametrize("language, subject, text, expected", [
    ("auto", "Printer is down", "It stopped printing.", "en"),
    ("auto", "Не печатает принтер", "Ошибка: Access denied (0x5).", "ru"),
    ("auto", "12345", "!!!", "en"),
    ("ru", "Printer is down", "It stopped printing.", "ru"),
    ("en", "Не печатает принтер", "Совсем.", "en"),
])
async def test_customers_are_answered_in_their_language(language, subject, text, expected,
                                                        desk, relay, clock):
    config = relay_config(relay, language=language, fallback_language="en")
    pipeline = Pipeline(config, desk, clock)
    await pipeline.ingest_email(mail(sender="guest@example.org", subject=subject, body=text))
    [ack] = [m for m in await send_all(desk, config, relay, clock)
             if m["To"] == "guest@example.org"]
    await desk.run(staff_reply, config, 1, "OK / Хорошо", True, None, "cli", clock.now)
    [answer] = await send_all(desk, config, relay, clock)
    separator = {"en": "##- Please type your reply above this line -##",
                 "ru": "##- Пожалуйста, пишите ответ выше этой строки -##"}[expected]
    first_words = {"en": "Hello,", "ru": "Здравствуйте!"}[expected]
    assert body(ack).startswith(f"{separator}\n\n{first_words}")
    assert body(answer).startswith(separator)
