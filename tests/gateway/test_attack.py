"""Acceptance attack on the inbound mail path (issue #14): mail as real clients in many
languages write it, and hostile input, through the whole pipeline on SQLite and PostgreSQL.

Each case asks what a help desk needs: the message ends decided or quarantined with a
reason (never an exception, never a row left undecided), the raw bytes are kept, the text
is what a mail client would show (right charset, no mojibake), nothing is dropped
(attachments present), and both backends decide alike (R-TS-5, R-TH-8, R-TH-9, R-CH-1,
R-CH-2). Reproducers live in tests/data/attack/; `xfail(strict=True)` marks a defect still
open, so fixing it flips the mark.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import uuid

import pytest
from sqlalchemy import select

from helpgate.channels.mail.smtp import MailEndpoint
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.models import InboundMessage, Ticket
from helpgate.ticketstore.queries import ticket_detail
from tests.conftest import DATA, PG_ADMIN_URL, _drop_schema, need_service
from tests.services import services_for

ATTACK = DATA / "attack"


def attack(name: str) -> bytes:
    return (ATTACK / name).read_bytes()


async def ingest(pipeline: Pipeline, store, raw: bytes) -> dict:
    """One raw mail through the pipeline -> its decision, stored state, ticket and comment."""
    result = await pipeline.ingest_email(raw)
    stored, state = await store.run(lambda s: s.execute(select(
        InboundMessage.raw, InboundMessage.state).where(
        InboundMessage.id == result.inbound)).one())
    out = {"action": result.action, "reason": result.reason, "state": state,
           "raw_kept": stored == raw, "subject": None, "text": None, "attachments": []}
    if result.ticket is not None:
        def detail(session):
            ticket = session.scalar(select(Ticket).where(Ticket.number == result.ticket))
            return ticket_detail(session, Config(), ticket, pipeline.clock())
        ticket = await store.run(detail)
        comment = next(c for c in ticket["comments"] if c["id"] == result.comment)
        out.update(subject=ticket["subject"], text=comment["text"],
                   attachments=[(a["filename"], a["content_type"], a["size"])
                                for a in comment["attachments"]],
                   sender=comment["from"] or (comment["author"] or {}).get("email"))
    return out


def assert_decided(out: dict) -> None:
    assert out["raw_kept"], "the raw message was not kept byte for byte"
    assert out["state"] != "received", "the row was left undecided"
    if out["action"] == "quarantined":
        assert out["reason"]


# ------------------------------------------------------------------------------------
# Classes that work: real clients in many languages and hostile structure.
# (file, action, words the subject must hold, words the text must hold, attachments)
# ------------------------------------------------------------------------------------
WORKS = [
    ("ok_jp_iso2022.eml", "new_ticket", "印刷できない", "プリンターが動きません", []),
    ("ok_jp_sjis_cp932.eml", "new_ticket", "①故障～", "①番のプリンター～故障です。髙橋", []),
    ("ok_zh_gb2312.eml", "new_ticket", "打印机故障", "打印机坏了，请尽快处理。镕", []),
    ("ok_zh_big5.eml", "new_ticket", "印表機", "印表機壞了，請儘快處理。", []),
    ("ok_ko_euckr.eml", "new_ticket", "프린터 똠", "프린터가 고장났습니다 똠방각하", []),
    ("ok_ko_ksc.eml", "new_ticket", "문의 똠", "프린터가 고장났습니다 똠방각하", []),
    ("ok_el_8859_7.eml", "new_ticket", "Εκτυπωτής", "Ο εκτυπωτής δεν λειτουργεί.", []),
    ("ok_ar_1256.eml", "new_ticket", "طابعة", "الطابعة لا تعمل. شكرا", []),
    ("ok_he_8859_8i.eml", "new_ticket", "מדפסת", "המדפסת לא עובדת", []),
    ("ok_tr_8859_9.eml", "new_ticket", "Yazıcı arızası", "Yazıcı çalışmıyor, lütfen yardım "
     "edin. İğş", []),
    ("ok_mailru_koi8_html_only.eml", "new_ticket", "Вопрос", "Помогите, не работает «1C»", []),
    ("ok_utf16_body.eml", "new_ticket", "utf16", "Привет из UTF-16", []),
    # RFC 2047 words split inside a character, in B and Q, and across charsets
    ("ok_ru_ew_split_midchar.eml", "new_ticket", "Не работает принтер", "Текст", []),
    ("ok_ru_ew_qp_split.eml", "new_ticket", "Привет", "body", []),
    ("ok_ew_utf8_split_3byte.eml", "new_ticket", "日本語", "body", []),
    ("ok_ew_mixed_charsets_split.eml", "new_ticket", "Привет мир", "body", []),
    # RFC 2231 continuation split inside a UTF-8 character
    ("ok_rfc2231_midchar.eml", "new_ticket", "inv", "see",
     [("Счёт-фактура №123.pdf", "application/pdf")]),
    ("ok_addr_group_undisclosed.eml", "new_ticket", "group", "body", []),
    ("ok_idn_punycode.eml", "new_ticket", "puny", "body", []),
    ("ok_bare_cr.eml", "new_ticket", "bare cr", "line one\nline two", []),
    ("ok_mixed_eol.eml", "new_ticket", "mixed", "line one\nline two", []),
    ("ok_forward_rfc822.eml", "new_ticket", "Счёт", "Пересылаю письмо поставщика.",
     [("Счёт.eml", "message/rfc822")]),
    ("ok_smime_signed.eml", "new_ticket", "Подписанное письмо",
     "Принтер не печатает, подпись приложена.",
     [("smime.p7s", "application/pkcs7-signature")]),
    ("ok_smime_encrypted.eml", "new_ticket", "Encrypted", "",
     [("smime.p7m", "application/pkcs7-mime")]),
    ("ok_outlook_tnef.eml", "new_ticket", "Отчёт по ошибке", "Смотрите вложение.",
     [("winmail.dat", "application/ms-tnef")]),
    ("ok_gmail_alt_related.eml", "new_ticket", "gmail inline", "screen",
     [("image.png", "image/png")]),
    ("ok_outlook_related_no_filename.eml", "new_ticket", "inline image no name",
     "Ошибка на скриншоте", [("attachment-1", "image/png")]),
    ("ok_zero_length_parts.eml", "new_ticket", "zero parts", "real text",
     [("empty.txt", "text/plain")]),
    ("ok_truncated_mid_base64.eml", "new_ticket", "trunc2", "see att", [("a.png", "image/png")]),
    ("ok_dsn_exim.eml", "ignored", None, None, []),
    ("ok_dsn_exchange.eml", "ignored", None, None, []),
    ("ok_dsn_gmail.eml", "ignored", None, None, []),
    ("ok_ooo_gmail_vacation.eml", "ignored", None, None, []),
    ("ok_binary_garbage.eml", "quarantined", None, None, []),
    ("ok_empty_file.eml", "quarantined", None, None, []),
]


@pytest.mark.parametrize("name, action, subject, text, attachments", WORKS,
                         ids=[w[0][3:-4] for w in WORKS])
async def test_real_client_mail_is_read_as_clients_show_it(pipeline, store, name, action,
                                                          subject, text, attachments):
    out = await ingest(pipeline, store, attack(name))
    assert out["action"] == action, out["reason"]
    assert_decided(out)
    if subject is not None:
        assert subject in out["subject"]
        assert text in out["text"]
        assert [a[:2] for a in out["attachments"]] == attachments


def _many_parts(count: int) -> bytes:
    parts = b"".join(b"--q\r\nContent-Type: application/octet-stream\r\nContent-Disposition: "
                     b"attachment; filename=f%d.bin\r\n\r\nx\r\n" % i for i in range(count))
    return (b"From: ivan@romashka.ru\r\nSubject: many parts\r\nMessage-ID: <parts@x>\r\n"
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain"
            b"\r\n\r\nmain text\r\n" + parts + b"--q--\r\n")


async def test_thousands_of_parts_are_all_kept(pipeline, store):
    out = await ingest(pipeline, store, _many_parts(3000))
    assert out["action"] == "new_ticket" and out["text"] == "main text"
    assert len(out["attachments"]) == 3000


async def test_a_one_megabyte_line_and_huge_headers_are_kept(pipeline, store):
    line = b"A" * (1 << 20)
    raw = (b"From: ivan@romashka.ru\r\nSubject: long line\r\nMessage-ID: <l1@x>\r\nX-Spam: "
           + b"x" * 500_000 + b"\r\n" + b"Received: from h by h; Mon, 30 Nov 2026\r\n" * 3000
           + b"\r\n" + line + b"\r\n")
    out = await ingest(pipeline, store, raw)
    assert out["action"] == "new_ticket" and out["text"] == line.decode()


# ------------------------------------------------------------------------------------
# Defects still open. Most harmful first.
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, attachment", [
    ("apple_alternative_with_attachment.eml", ("akt.pdf", "application/pdf")),
    ("apple_alternative_with_inline_image.eml", ("screenshot.png", "image/png")),
    ("outlook_meeting_request.eml", ("attachment-1.ics", "text/calendar")),
], ids=["apple-attachment", "apple-inline-image", "outlook-meeting"])
async def test_files_inside_an_alternative_are_kept(pipeline, store, name, attachment):
    """Apple Mail puts an attached file or a pasted screenshot in the HTML branch of a
    multipart/alternative; Outlook's meeting request is text/calendar as a third
    alternative. A client shows them; the ticket must hold them."""
    out = await ingest(pipeline, store, attack(name))
    assert out["action"] == "new_ticket"
    assert [a[1] for a in out["attachments"]] == [attachment[1]]


@pytest.mark.parametrize("name", ["utf8_body_with_8bit_disclaimer.eml",
                                  "utf8_body_cut_mid_character.eml"])
async def test_utf8_text_with_one_bad_byte_keeps_its_words(pipeline, store, name):
    """A disclaimer appended in windows-1251 by a mail filter (altermime and the like),
    or a body cut inside a character: the customer's UTF-8 words must stay readable."""
    out = await ingest(pipeline, store, attack(name))
    assert "Добрый день! Принтер в бухгалтерии не печатает" in out["text"]


async def test_the_endpoint_takes_lines_longer_than_1000_characters(store, clock):
    config = Config(mail={"endpoint": {"port": 0}})
    endpoint = MailEndpoint(config, services_for(Pipeline(config, store, clock)))
    await endpoint.start()
    try:
        code, _ = await asyncio.to_thread(_send, endpoint.port,
                                          attack("smtp_long_html_line.eml"))
    finally:
        await endpoint.stop()
    assert code == 250


def _send(port: int, raw: bytes) -> tuple[int, bytes]:
    client = smtplib.SMTP("127.0.0.1", port)
    try:
        client.ehlo()
        client.mail("crm@romashka.ru")
        client.rcpt("support@helpgate.localhost")
        return client.data(raw)
    finally:
        client.close()


async def test_iso2022jp_with_nec_specials_decodes(pipeline, store):
    out = await ingest(pipeline, store, attack("iso2022jp_nec_special.eml"))
    assert out["subject"] == "㈱"
    assert out["text"] == "①②③ こんにちは"


@pytest.mark.parametrize("name, words", [
    ("mbox_escaped_from.mbox", "From 09:05 jobs are rejected"),
    ("mbox_unescaped_from.mbox", "From 09:00 the queue is stuck"),
])
def test_mbox_lines_starting_with_from_stay_in_the_text(hg, name, words):
    summary = hg.json("import", "mbox", str(ATTACK / name))
    assert "quarantined" not in summary["actions"], summary
    texts = [c["text"] for t in hg.json("tickets", "--json")
             for c in hg.ticket(t["number"])["comments"]]
    assert any(words in text for text in texts), texts


async def test_a_short_unlabelled_windows1251_reply_is_cyrillic(pipeline, store):
    out = await ingest(pipeline, store, attack("unlabelled_1251_short_reply.eml"))
    assert out["text"] == "Да"


@pytest.mark.parametrize("name", ["obs_space_before_colon.eml",
                                  "obs_space_before_colon_first.eml"])
async def test_white_space_before_a_header_colon_is_a_header(pipeline, store, name):
    out = await ingest(pipeline, store, attack(name))
    assert out["action"] == "new_ticket", out["reason"]
    assert out["subject"] == "Printer is down"
    assert out["text"] == "It stopped printing."


async def test_a_quoted_local_part_is_a_sender(pipeline, store):
    out = await ingest(pipeline, store, attack("quoted_local_part_sender.eml"))
    assert out["action"] == "new_ticket", out["reason"]


async def test_a_bidi_override_never_reaches_a_file_name(pipeline, store):
    out = await ingest(pipeline, store, attack("filename_bidi_override.eml"))
    (filename, _, _), = out["attachments"]
    assert "\u202e" not in filename and filename.endswith(".exe")


# ------------------------------------------------------------------------------------
# The CLI as a new user meets it.
# ------------------------------------------------------------------------------------
async def test_a_postgresql_url_can_choose_its_schema(hg, monkeypatch):
    import asyncpg
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        need_service(f"PostgreSQL at {dsn} unavailable: {exc}")
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
        monkeypatch.setenv("HELPGATE_DATABASE_URL", url)
        code = (await asyncio.to_thread(hg.run, "db", "upgrade"))[0]
        tables = await conn.fetchval("SELECT count(*) FROM information_schema.tables "
                                     "WHERE table_schema = $1", schema)
    finally:
        await conn.close()
        await _drop_schema(schema)
    assert code == 0 and tables > 0


def test_an_unknown_status_filter_is_bad_input(hg):
    code, out, err = hg.run("tickets", "--status", "bogus")
    assert code == 1 and err.count("\n") == 1 and "bogus" in err


def test_quarantine_replay_and_bad_arguments_answer_in_one_line(hg):
    quarantined = hg.ingest(attack("ok_empty_file.eml"))
    assert quarantined["action"] == "quarantined"
    listed = hg.json("quarantine", "list", "--json")
    assert [q["id"] for q in listed] == [quarantined["inbound"]] and listed[0]["reason"]
    replayed = hg.json("quarantine", "replay", str(quarantined["inbound"]))
    assert replayed["action"] == "quarantined" and replayed["reason"]
    for args in (("quarantine", "replay", "999"), ("ticket", "0"),
                 ("ingest", str(ATTACK / "missing.eml"))):
        code, out, err = hg.run(*args)
        assert (code, out) == (1, "") and err.count("\n") == 1, (args, err)
    assert json.loads(hg.run("tickets", "--json")[1]) == []


async def test_format_flowed_text_is_unwrapped(pipeline, store):
    out = await ingest(pipeline, store, attack("flowed_delsp.eml"))
    assert out["text"] == ("The printer in room 12 stopped printing this morning.\n"
                           "From the log: queue stuck.")


async def test_a_word_split_over_spans_stays_one_word(pipeline, store):
    out = await ingest(pipeline, store, attack("outlook_word_split_in_spans.eml"))
    assert out["text"] == "Принтер не печатает, звоните 8(495)123-45-67"
