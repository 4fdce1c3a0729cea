"""What a customer's mail program shows: subjects and display names come back exactly,
whichever decoder reads them, and no header value a customer sent can stop delivery
(R-OUT-2, issue #15 items 1 and 2). Every mail goes through the real aiosmtpd relay."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from email.utils import parseaddr

import fast_mail_parser
import mailparser
import pytest

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.base import Outgoing
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore import people
from helpgate.ticketstore.queries import outbox_list
from tests.mailfactory import mail
from tests.mailservers import Received, Relay

# Long enough that any folding splits them (> 78 characters with the marker).
SUBJECTS = {
    "cyrillic": "Не печатает принтер в бухгалтерии на третьем этаже после обновления драйвера",
    "greek": "Ο εκτυπωτής δεν εκτυπώνει στο λογιστήριο μετά την ενημέρωση του οδηγού",
    "cjk": "打印机 在 会计部门 无法 打印，更新 驱动程序 之后 一直 出现 错误 提示 请 帮忙 看看",
    "arabic": "الطابعة لا تطبع في قسم المحاسبة بعد تحديث برنامج التشغيل الخاص بها منذ يومين",
    "emoji": "🖨️ Printer 👩‍💻 not printing 🙁 in  accounting 🧾 after the driver update 🔧 again",
    "ascii": "The printer in accounting stopped printing after the driver update on Monday",
}
NAMES = {
    "cyrillic": "Служба технической поддержки ООО «Ромашка и партнёры»",
    "greek": "Τμήμα τεχνικής υποστήριξης της εταιρείας μας",
    "cjk": "技术 支持 服务 部门 北京 分公司 客户 服务 中心",
    "arabic": "قسم الدعم الفني لخدمة العملاء في الشركة",
    "emoji": "🛟 Support 👩‍🔧 team 🌼 Romashka",
    "ascii": "Romashka LLC technical support, second line of the help desk",
}


def decoded(received: Received) -> dict[str, list[str]]:
    """Subject and From display name as four independent decoders read them."""
    data = received.data
    modern = email.message_from_bytes(data, policy=email.policy.default)
    legacy = email.message_from_bytes(data)
    parsed = mailparser.parse_from_bytes(data)
    fast = fast_mail_parser.parse_email(data)
    legacy_from = str(make_header(decode_header(legacy["From"])))
    return {
        "subject": [modern["Subject"], str(make_header(decode_header(legacy["Subject"]))),
                    parsed.subject, fast.subject],
        "name": [modern["From"].addresses[0].display_name,
                 parseaddr(legacy_from)[0], parsed.from_[0][0],
                 parseaddr(fast.headers["From"][0])[0]],
    }


def relay_config(relay: Relay, **mail_keys) -> Config:
    return Config(mail={"smtp": relay.smtp_config(), **mail_keys},
                  notifications={"employees": "none"})


async def deliver(store, config: Config, clock) -> None:
    worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)
    await worker.run_once()


@pytest.mark.parametrize("script", sorted(SUBJECTS))
async def test_long_subjects_and_names_survive_every_decoder(script, store, relay, clock):
    config = relay_config(relay, display_name=NAMES[script])
    result = await Pipeline(config, store, clock).ingest_email(
        mail(subject=SUBJECTS[script]))
    await deliver(store, config, clock)
    [ack] = relay.received
    values = decoded(ack)
    assert values["subject"] == [f"[#{result.ticket}] {SUBJECTS[script]}"] * 4
    assert values["name"] == [NAMES[script]] * 4
    subject = ack.data.split(b"\r\nSubject: ")[1].split(b"\r\n")[0]
    # Encoded lines within 78 characters; plain ASCII is not folded (within 998).
    assert len(subject) <= (998 if script == "ascii" else 78)
    assert max(len(line) for line in ack.data.splitlines()) <= 998


@pytest.fixture
async def desk(store, clock):
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Anna", email="anna@helpgate.test", role="admin"), clock.now)
    return store


# A subject with NEL (U+0085), one with U+2028 and a tab; a Message-ID with a control
# character in it.
HOSTILE = (b"From: Ivan <ivan@romashka.ru>\r\nTo: support@helpgate.localhost\r\n"
           b"Subject: =?utf-8?q?Drucker=C2=85kaputt_im_B=C3=BCro?=\r\n"
           b"Message-ID: <bad\x01id@client.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nDer Drucker druckt nicht.\r\n")
HOSTILE_UTF8 = HOSTILE.replace(b"=?utf-8?q?Drucker=C2=85kaputt_im_B=C3=BCro?=",
                               b"=?utf-8?q?Drucker=E2=80=A8kaputt=09im_B=C3=BCro?=")


@pytest.mark.parametrize("raw", [HOSTILE, HOSTILE_UTF8], ids=["nel", "u2028"])
async def test_control_characters_never_stop_notifications(raw, desk, relay, clock):
    config = relay_config(relay)
    result = await Pipeline(config, desk, clock).ingest_email(raw)
    await deliver(desk, config, clock)
    await desk.run(staff_reply, config, result.ticket, "Wir schicken einen Techniker.",
                   True, None, "cli", clock.now)
    await deliver(desk, config, clock)
    assert [r["state"] for r in await desk.run(outbox_list)] == ["sent", "sent"]
    ack, answer = (r.message for r in relay.received)
    assert ack["Subject"] == answer["Subject"] == f"[#{result.ticket}] Drucker kaputt im Büro"
    assert "Wir schicken einen Techniker." in answer.get_body(("plain",)).get_content()


async def test_a_row_with_broken_header_values_is_still_delivered(relay):
    """Rows written before values were cleaned: every header is cleaned when sent."""
    config = relay_config(relay)
    message = Outgoing(
        id=1, channel="email", kind="comment", recipient="ivan@romashka.ru",
        subject="[#5] Принтер\r\nBcc: victim@example.com\u2028и\x85сканер", text="Готово.",
        message_id="<hg5.00ff@helpgate.localhost>",
        headers={"From": "Support\n <support@helpgate.localhost>",
                 "In-Reply-To": "<ok@client.example>",
                 "References": "<bad\x85id@client.example> <ok@client.example> <a\u2028b@c>",
                 "Auto-Submitted": "auto-generated"})
    assert (await EmailTransport(config).send(message)).delivered
    [sent] = relay.received
    received = sent.message
    assert received["Subject"] == "[#5] Принтер Bcc: victim@example.com и сканер"
    assert received["Bcc"] is None and sent.rcpt_tos == ["ivan@romashka.ru"]
    assert received["References"] == "<ok@client.example>"
    assert received["From"].addresses[0].addr_spec == "support@helpgate.localhost"


IDN = "иван@пример.рф"


async def test_a_customer_with_an_internationalised_address_gets_the_acknowledgement(
        store, relay, clock):
    """Issue #14 makes `иван@пример.рф` a contact; the answer must reach that address:
    SMTPUTF8 and a UTF-8 To (RFC 6531/6532), not encoded words no server can route."""
    config = relay_config(relay)
    raw = f"From: Иван <{IDN}>\r\nSubject: Принтер\r\nMessage-ID: <i@x>\r\n\r\nНе печатает\r\n"
    assert (await Pipeline(config, store, clock).ingest_email(raw.encode())).action == \
        "new_ticket"
    await deliver(store, config, clock)
    [received] = relay.received
    assert received.rcpt_tos == [IDN]
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parseaddr(str(parsed["To"]))[1] == IDN


async def test_a_relay_without_smtputf8_parks_it_saying_why(store, clock):
    relay = await Relay(smtputf8=False).start()
    try:
        config = relay_config(relay)
        raw = f"From: {IDN}\r\nSubject: s\r\nMessage-ID: <j@x>\r\n\r\nтекст\r\n".encode()
        await Pipeline(config, store, clock).ingest_email(raw)
        await deliver(store, config, clock)
        [row] = await store.run(outbox_list)
        assert row["state"] == "parked" and "SMTPUTF8" in row["last_error"]
        assert relay.received == []
    finally:
        await relay.stop()
