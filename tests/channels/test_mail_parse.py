"""Raw mail -> InboundMessage (channels/mail/parse.py): charsets that lie or are unknown are
decoded, never a reason to reject (R-TS-5); RFC 2047/2231 names decoded; text/plain first,
else the HTML as text; message/* parts are never the body; what cannot be processed is
flagged for quarantine."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from helpgate.channels.mail.parse import decode_bytes, decode_header, html_to_text, parse_email
from tests.conftest import eml

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
RU = "Не печатает принтер в бухгалтерии, посмотрите пожалуйста"


def parse(raw: bytes):
    return parse_email(raw, NOW)


@pytest.mark.parametrize("data, declared", [
    (RU.encode("cp1251"), "windows-1251"),
    (RU.encode("koi8-r"), "koi8-r"),
    (RU.encode("utf-8"), "utf-8"),
    (RU.encode("cp1251"), "x-unknown"),      # unknown label: detected
    (RU.encode("koi8-r"), None),             # no label: detected
    (RU.encode("cp1251"), "utf-8"),          # wrong label: detected
    (RU.encode("koi8-r"), "us-ascii"),       # 8-bit text labelled ASCII
])
def test_body_charsets(data, declared):
    assert decode_bytes(data, declared) == RU


def test_undecodable_bytes_never_raise():
    assert isinstance(decode_bytes(bytes(range(256)), "utf-8"), str)


@pytest.mark.parametrize("value, expected", [
    ("=?utf-8?B?0J/RgNC40LLQtdGC?=", "Привет"),
    ("Re: [#5] =?koi8-r?B?8NLJ18XU?=", "Re: [#5] Привет"),
    ("=?windows-1251?Q?=CF=F0=E8=E2=E5=F2?= world", "Привет world"),
    ("=?x-unknown?B?z/Do4uXy?=", "Привет"),
    ("=?utf-8?B?0J/RgA==?=\n =?utf-8?B?0LjQstC10YI=?=", "Привет"),
    ("plain subject", "plain subject"),
    ("", ""),
])
def test_header_words(value, expected):
    assert decode_header(value) == expected


def test_raw_8bit_header_is_detected():
    raw = "Subject: Привет, это тема письма в кодировке\nFrom: a@b.ru\n\nx\n".encode("cp1251")
    assert parse(raw).subject == "Привет, это тема письма в кодировке"


def test_crlf_becomes_newlines():
    message = parse(b"From: a@b.ru\r\nSubject: s\r\n\r\nline one\r\nline two\r\n")
    assert message.text == "line one\nline two"


def test_plain_text_is_preferred_to_html():
    message = parse(eml("new_request_gmail_ru.eml"))
    assert message.text.startswith("Здравствуйте!\n\nНе печатает принтер HP LaserJet")
    assert message.html is not None and not message.text_from_html
    assert (message.sender_name, message.sender_email) == ("Иван Петров", "ivan@romashka.ru")


def test_html_only_mail_is_read_as_text():
    message = parse(eml("html_only_outlook_web.eml"))
    assert message.text_from_html
    assert message.text == ("Добрый день!\n\nПросим выставить счёт на продление лицензий — "
                            "15 рабочих мест.\n\nСпасибо.")


def test_html_to_text_keeps_lines_and_drops_markup():
    text = html_to_text("<style>p{}</style><p>Раз<br>два</p><ul><li>три</li></ul>")
    assert "Раз\nдва" in text and "три" in text and "{" not in text


@pytest.mark.parametrize("disposition, expected", [
    ("attachment; filename*=utf-8''%D0%A1%D1%87%D1%91%D1%82.pdf", "Счёт.pdf"),
    ('attachment; filename="=?utf-8?B?0KHRh9GR0YIucGRm?="', "Счёт.pdf"),
    ("attachment; filename*0*=utf-8''%D0%A1%D1%87; filename*1*=%D1%91%D1%82.pdf", "Счёт.pdf"),
    ('attachment; filename="report.pdf"', "report.pdf"),
])
def test_attachment_names(disposition, expected):
    raw = ("From: a@b.ru\nSubject: s\nMIME-Version: 1.0\n"
           "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
           "see attachment\n--B\nContent-Type: application/pdf\n"
           f"Content-Disposition: {disposition}\nContent-Transfer-Encoding: base64\n\n"
           "JVBERi0=\n--B--\n").encode()
    message = parse(raw)
    assert [(a.filename, a.data) for a in message.attachments] == [(expected, b"%PDF-")]
    assert message.text == "see attachment"


def test_attached_mail_is_an_attachment_not_the_body():
    raw = (b"From: a@b.ru\nSubject: Fwd: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
           b"see below\n--B\nContent-Type: message/rfc822\n\nFrom: c@d.ru\nSubject: inner\n\n"
           b"inner text\n--B--\n")
    message = parse(raw)
    assert message.text == "see below"
    assert [(a.filename, a.content_type) for a in message.attachments] == [
        ("inner.eml", "message/rfc822")]


def test_delivery_status_report():
    message = parse(eml("bounce_dsn_postfix.eml").replace(b"{ORIGINAL_ID}", b"<hg1.ab@x>"))
    report = message.delivery_status
    assert (report.original_message_id, report.recipient, report.action, report.status) == (
        "<hg1.ab@x>", "nobody@romashka.ru", "failed", "5.1.1")
    assert "User unknown" in report.diagnostic
    assert message.attachments == ()


def test_free_form_bounce_quotes_the_original_id():
    raw = (b"From: MAILER-DAEMON@mx.example\nSubject: failure notice\n\n"
           b"Sorry, we were unable to deliver your message.\n\n--- Original message ---\n"
           b"Message-ID: <hg3.cd@helpgate.localhost>\nSubject: [#3]\n")
    assert parse(raw).delivery_status.original_message_id == "<hg3.cd@helpgate.localhost>"


def test_identity_and_threading_headers():
    message = parse(b"From: Ivan <Ivan@Romashka.RU>\nReply-To: boss@romashka.ru\n"
                    b"To: a@x.ru, b@x.ru\nCc: c@x.ru\nSubject: s\nMessage-ID: <m2@r>\n"
                    b"In-Reply-To: <m1@r>\nReferences: <m0@r>\n <m1@r>\n\nbody\n")
    assert (message.sender_email, message.reply_to) == ("ivan@romashka.ru", "boss@romashka.ru")
    assert (message.to, message.cc) == (("a@x.ru", "b@x.ru"), ("c@x.ru",))
    assert (message.message_id, message.in_reply_to, message.references) == (
        "<m2@r>", ("<m1@r>",), ("<m0@r>", "<m1@r>"))
    assert message.dedupe_key.startswith("mid:") and message.dedupe_key.endswith(":<m2@r>")


def test_without_message_id_the_content_is_the_key():
    first = parse(b"From: a@b.ru\nSubject: s\n\nbody\n")
    assert first.dedupe_key.startswith("sha256:")
    assert first.dedupe_key == parse(b"From: a@b.ru\nSubject: s\n\nbody\n").dedupe_key


@pytest.mark.parametrize("raw, problem", [
    (b"", "empty message"),
    (b"   \r\n", "empty message"),
    (b"From: a@b.ru\n\n\n", "empty message: no subject, no text and no attachments"),
    (b"Subject: s\n\nbody\n", "no sender"),
    (b"From: undisclosed\nSubject: s\n\nbody\n", "no sender"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "unparseable message"),
])
def test_problems(raw, problem):
    assert parse(raw).problem.startswith(problem)


def test_subject_only_mail_with_an_attachment_is_fine():
    raw = (b"From: a@b.ru\nSubject: scan\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: image/png\n"
           b"Content-Disposition: attachment; filename=scan.png\n\nPNG\n--B--\n")
    assert parse(raw).problem is None


def _with_attachments(*encoded: bytes) -> bytes:
    parts = b"".join(b"--b\nContent-Type: image/jpeg\nContent-Disposition: attachment; "
                     b"filename=\"p%d.jpg\"\nContent-Transfer-Encoding: base64\n\n%s\n"
                     % (index, body) for index, body in enumerate(encoded))
    return (b"From: ivan@romashka.ru\nSubject: photos\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n"
            b"See the photos.\n" + parts + b"--b--\n")


def test_photos_each_smaller_than_a_blob_run_in_a_large_mail_are_kept_whole():
    # Several mid-sized photos: the mail is large, each encoded body a run of its own
    # (channels/mail/blobs.py finds runs only where they start: this once took a minute).
    import base64
    import random
    photos = [random.Random(n).randbytes(size) for n, size in
              enumerate((120_000, 150_000, 190_000, 9_000))]
    message = parse(_with_attachments(*(base64.encodebytes(p) for p in photos)))
    assert [a.data for a in message.attachments] == photos
    assert message.text.strip() == "See the photos."


@pytest.mark.parametrize("size", [3_000, 60_000, 150_000])
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_broken_base64_under_256_kb_reads_as_the_standard_library_reads_it(size, cut):
    # Encoded bodies from 16 KB are decoded by channels/mail/blobs.py, not by the
    # standard library: a damaged one under 256 KB (padding lost, a character too
    # many) must still come out as the standard library made it (over 256 KB,
    # test_mail_hostile: what decodes).
    import base64
    import email
    import random
    encoded = base64.encodebytes(random.Random(size).randbytes(size)).rstrip(b"=\n")
    encoded = encoded[:-cut] if cut < 3 else encoded + b"A"
    raw = _with_attachments(encoded)
    expected = email.message_from_bytes(raw).get_payload()[1].get_payload(decode=True)
    assert [a.data for a in parse(raw).attachments] == [expected]
