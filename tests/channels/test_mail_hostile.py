"""Mail no client should write, but servers deliver: read by class, never refused.

Each class here was once quarantined or crashed the parser (issue #14): internationalised
addresses in raw UTF-8, mbox envelope lines, bounces with a null sender, subject-only
requests, broken MIME, legacy East-Asian and Western labels, NUL and control characters,
HTML nested past libxml2's default depth. R-TS-5: a wrong charset or a broken structure is
read the way mail clients read it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from helpgate.channels.mail.charsets import clean_line, decode_bytes, text_codec
from helpgate.channels.mail.parse import parse_email

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def parse(raw: bytes):
    return parse_email(raw, NOW)


def storable(value: str) -> bool:
    """What every backend's driver stores: no NUL, no lone surrogate."""
    return "\x00" not in value and not any("\udc80" <= ch <= "\udcff" for ch in value)


# ------------------------------------------------------- 1. internationalised addresses
@pytest.mark.parametrize("address", [
    "иван@пример.рф", "иван@romashka.ru", "ivan@пример.рф", "δοκιμή@παράδειγμα.δοκιμή",
    "用户@例子.广告",
])
def test_raw_utf8_address_is_a_sender(address):
    raw = (f"From: Иван <{address}>\r\nTo: support@helpgate.localhost\r\n"
           f"Subject: Принтер\r\nMessage-ID: <idn-1@x>\r\n\r\nНе печатает.\r\n").encode()
    message = parse(raw)
    assert message.problem is None
    assert (message.sender_email, message.sender_name) == (address, "Иван")
    assert storable(message.dedupe_key) and storable(message.sender_email)


def test_raw_8bit_address_in_a_legacy_charset_is_decoded_not_kept_as_surrogates():
    raw = "From: Петя <петя@пример.рф>\r\nSubject: s\r\n\r\nтекст\r\n".encode("cp1251")
    message = parse(raw)
    assert message.problem is None and message.sender_email == "петя@пример.рф"


# ------------------------------------------------------------------ 2. mbox envelopes
@pytest.mark.parametrize("envelope", [
    b"From sender@example.com  Tue Oct 29 03:52:03 2013\n",
    b"From sender@example.com Tue Oct 29 03:52:03 2013\r\n",
    b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n",
    b"\r\nFrom - Mon Nov 23 10:00:00 2026\n",
])
def test_an_mbox_envelope_line_before_the_headers_is_skipped(envelope):
    message = parse(envelope + b"From: ivan@romashka.ru\nSubject: mbox\nMessage-ID: <m@x>\n\n"
                    b"body\n")
    assert message.problem is None
    assert (message.sender_email, message.subject, message.text) == (
        "ivan@romashka.ru", "mbox", "body")


# ------------------------------------------------------------- 3. null-sender bounces
@pytest.mark.parametrize("headers", [
    b"From: MAILER-DAEMON (Mail Delivery System)\n",
    b"From: Mail Delivery Subsystem <MAILER-DAEMON>\n",
    b"Return-Path: <>\n",
    b"Return-Path: <>\nFrom: MAILER-DAEMON\n",
])
def test_a_bounce_whose_only_sender_is_the_daemon_is_a_delivery_report(headers):
    raw = (headers + b"Subject: Undelivered Mail Returned to Sender\n\n"
           b"This is the mail system.\n\n--- Original message ---\n"
           b"Message-ID: <hg3.cd@helpgate.localhost>\n")
    message = parse(raw)
    assert message.problem is None
    assert message.delivery_status is not None
    assert message.delivery_status.original_message_id == "<hg3.cd@helpgate.localhost>"


# --------------------------------------------------------------- 4. subject-only mail
def test_a_mail_with_only_a_subject_is_a_request():
    message = parse(b"From: ivan@romashka.ru\nSubject: Call me back please\n\n")
    assert message.problem is None and message.subject == "Call me back please"


def test_no_subject_no_text_no_attachment_is_empty():
    assert parse(b"From: ivan@romashka.ru\nSubject:  \n\n \n").problem.startswith("empty")


# --------------------------------------------------------------------- 5. broken MIME
def test_a_missing_start_boundary_reads_the_body_as_text():
    raw = (b"From: a@b.ru\nSubject: s\nContent-Type: multipart/mixed; boundary=XYZ\n\n"
           b"Just some text, no parts at all.\n")
    message = parse(raw)
    assert message.problem is None and "Just some text" in message.text


def test_a_boundary_that_lies_is_found_where_the_parts_start():
    raw = (b"From: a@b.ru\nSubject: s\nContent-Type: multipart/mixed; boundary=WRONG\n\n"
           b"--real\nContent-Type: text/plain; charset=utf-8\n\n\xd0\x9f\xd1\x80\xd0\xb8"
           b"\xd0\xb2\xd0\xb5\xd1\x82\n--real\nContent-Type: application/pdf\n"
           b"Content-Disposition: attachment; filename=a.pdf\n\n%PDF\n--real--\n")
    message = parse(raw)
    assert message.problem is None and message.text.strip() == "Привет"
    assert [a.filename for a in message.attachments] == ["a.pdf"]


def test_no_boundary_parameter_reads_the_body_as_text():
    message = parse(b"From: a@b.ru\nSubject: s\nContent-Type: multipart/mixed\n\nno boundary\n")
    assert message.problem is None and message.text.strip() == "no boundary"


@pytest.mark.parametrize("header", [
    "Content-Disposition: attachment; filename=\"Счёт №5.pdf\"",
    "Content-Disposition: attachment; filename=Счёт №5.pdf",
    "Content-Type: application/pdf; name=\"Счёт №5.pdf\"",
])
def test_a_raw_utf8_file_name_is_decoded(header):
    raw = ("From: a@b.ru\nSubject: s\nContent-Type: multipart/mixed; boundary=B\n\n"
           "--B\nContent-Type: text/plain\n\nсм. счёт\n--B\n"
           f"{header}\nContent-Transfer-Encoding: base64\n\nJVBERg==\n--B--\n").encode()
    message = parse(raw)
    assert message.problem is None
    assert [(a.filename, a.data) for a in message.attachments] == [("Счёт №5.pdf", b"%PDF")]


@pytest.mark.parametrize("label", ["base64", "hex", "rot13", "zlib", "utf-8\x00", "\x00",
                                   "x-unknown", "\"\"", "a" * 300])
def test_a_label_that_names_no_charset_falls_back_to_detection(label):
    body = "Принтер не печатает, помогите пожалуйста".encode()
    raw = (f"From: a@b.ru\nSubject: s\nContent-Type: text/plain; charset=\"{label}\"\n\n"
           .encode() + body + b"\n")
    message = parse(raw)
    assert message.problem is None and message.text.strip() == body.decode()


# --------------------------------------------------------- 6. labels read as clients do
@pytest.mark.parametrize("label, text, codec", [
    ("shift_jis", "プリンター①が動きません", "cp932"),       # ① exists only in CP932
    ("gb2312", "打印机不工作 — 䶮", "gb18030"),
    ("euc-kr", "프린터가 작동하지 않습니다 똠", "cp949"),     # 똠 is outside EUC-KR
    ("iso-8859-1", "Caf\u00e9 \u20ac5 \u2019quoted\u2019", "cp1252"),
    ("us-ascii", "Caf\u00e9 \u2013 na\u00efve \u201cquoted\u201d", "cp1252"),
])
def test_legacy_labels_decode_with_the_superset_clients_use(label, text, codec):
    data = text.encode(codec)
    assert decode_bytes(data, label) == text
    subject = f"=?{label}?B?{__import__('base64').b64encode(data).decode()}?="
    message = parse(f"From: a@b.ru\nSubject: {subject}\n\nx\n".encode())
    assert message.subject == text


def test_latin1_bytes_windows_leaves_undefined_are_kept_not_refused():
    assert decode_bytes(b"a\x81b\x80", "iso-8859-1") == "a\x81b\u20ac"


def test_text_codec_refuses_byte_transforms():
    assert [text_codec(x) for x in ("base64", "hex", "utf8", "Shift_JIS")] == [
        None, None, "utf-8", "shift_jis"]


# ------------------------------------------------------ 7. values every backend stores
def test_nul_and_controls_never_leave_the_parser():
    raw = (b"From: \"Iv\x00an\" <ivan@romashka.ru>\nSubject: Pri\x00nter\xc2\x85down\n"
           b"Date: " + b"x" * 300 + b"\nMessage-ID: <" + b"m" * 900 + b"@x>\n"
           b"Content-Type: multipart/mixed; boundary=B\n\n--B\n"
           b"Content-Type: text/plain\n\nte\x00xt\n--B\n"
           b"Content-Disposition: attachment; filename=\"a\x00b.pdf\"\n\nPDF\n--B--\n")
    message = parse(raw)
    assert message.problem is None
    values = [message.subject, message.sender_name, message.text, message.date,
              message.message_id, message.dedupe_key,
              *(a.filename for a in message.attachments)]
    assert all(storable(v) for v in values), values
    assert message.sender_name == "Ivan" and message.text.strip() == "text"
    assert message.subject == "Printer down"
    assert "\n" not in message.subject and "\r" not in message.subject
    assert len(message.date) <= 100 and len(message.message_id) <= 500
    assert len(message.dedupe_key) <= 500


def test_an_address_longer_than_smtp_allows_is_not_a_sender():
    raw = b"From: " + b"a" * 400 + b"@example.com\nSubject: s\n\nbody\n"
    assert parse(raw).problem.startswith("no sender")


def test_a_very_long_display_name_is_cut_to_what_the_store_keeps():
    raw = b"From: \"" + b"N" * 1000 + b"\" <ivan@romashka.ru>\nSubject: s\n\nbody\n"
    assert len(parse(raw).sender_name) == 255


@pytest.mark.parametrize("value, expected", [
    ("a\r\nb", "a b"), ("a\u2028b", "a b"), ("a\x85b", "a b"), ("a\tb", "a b"),
    ("\udcd0\udcb8", "и"), ("x" * 10, "xxxx"),
])
def test_clean_line(value, expected):
    assert clean_line(value, 4 if expected == "xxxx" else None) == expected


# ----------------------------------------------------- 8. reused Message-IDs
def test_same_message_id_other_content_is_another_key():
    a = parse(b"From: a@b.ru\nSubject: s\nMessage-ID: <same@x>\n\nfirst\n")
    b = parse(b"From: a@b.ru\nSubject: s\nMessage-ID: <same@x>\n\nsecond\n")
    c = parse(b"From: evil@b.ru\nSubject: s\nMessage-ID: <same@x>\n\nfirst\n")
    assert len({a.dedupe_key, b.dedupe_key, c.dedupe_key}) == 3


def test_a_redelivery_with_trace_headers_and_other_line_ends_is_the_same_key():
    mail = b"From: a@b.ru\nSubject: s\nMessage-ID: <same@x>\n\nline one\nline two\n"
    traced = (b"Return-Path: <a@b.ru>\r\nReceived: from mx by imap; Mon, 23 Nov 2026\r\n"
              b"Delivered-To: support@x\r\n" + mail.replace(b"\n", b"\r\n"))
    assert parse(mail).dedupe_key == parse(traced).dedupe_key


# ------------------------------------------------------------ 10. deep HTML nesting
def test_html_nested_past_libxml2s_default_depth_keeps_its_text():
    depth = 400
    html = "<html><body>" + "<div>" * depth + "deep words" + "</div>" * depth + \
        "<p>after the depth</p></body></html>"
    raw = ("From: a@b.ru\nSubject: s\nContent-Type: text/html; charset=utf-8\n\n"
           + html).encode()
    message = parse(raw)
    assert "deep words" in message.text and "after the depth" in message.text


def test_mime_nested_deeper_than_any_client_is_kept_not_recursed_forever():
    depth = 3000
    parts = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
                     for i in range(depth))
    raw = (b"From: a@b.ru\nSubject: s\nContent-Type: multipart/mixed; boundary=b0\n\n"
           + parts + b"--b%d\nContent-Type: text/plain\n\ninnermost\n" % depth)
    message = parse(raw)
    assert message.problem is None and "innermost" in message.text


# --------------------------------------------------- 11. large bodies kept out of parsing
def _big(body_lines: list[bytes], cte: bytes = b"base64") -> bytes:
    return (b"From: a@b.ru\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: " + cte +
            b"\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\n"
            + b"\r\n".join(body_lines) + b"\r\n--B--\r\n")


@pytest.mark.parametrize("width", [76, 64, 73, 1000])
def test_a_large_base64_attachment_decodes_exactly(width):
    import base64
    import os
    data = os.urandom(600_000)
    encoded = base64.b64encode(data)
    lines = [encoded[i:i + width] for i in range(0, len(encoded), width)]
    message = parse(_big(lines))
    assert message.text == "hello"
    assert [(a.filename, a.data == data) for a in message.attachments] == [("x.bin", True)]


def test_a_large_attachment_with_broken_padding_keeps_what_decodes():
    import base64
    import os
    data = os.urandom(600_000)
    encoded = base64.b64encode(data)[:-3]  # the end lost in transit
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    message = parse(_big(lines))
    assert message.attachments[0].data == data[:len(message.attachments[0].data)]
    assert len(message.attachments[0].data) >= len(data) - 3


def test_a_large_unencoded_body_is_kept_as_sent():
    line = b"A" * 70
    message = parse(_big([line] * 5000, b"7bit"))
    assert message.attachments[0].data.replace(b"\r\n", b"\n") == b"\n".join([line] * 5000)


@pytest.mark.parametrize("data, expected", [
    ("Привет, мир".encode() + " Конфиденциально".encode("cp1251"), "Привет, мир Конфиденциально"),
    ("Привет, мир".encode()[:-1], "Привет, ми\ufffd"),
    ("Привет, мир, как дела".encode("cp1251"), "Привет, мир, как дела"),  # not UTF-8 at all
])
def test_stray_bytes_in_utf8_cost_only_themselves(data, expected):
    assert decode_bytes(data, "utf-8") == expected


@pytest.mark.parametrize("text, delsp, expected", [
    ("The printer stopped \nprinting.\n", False, "The printer stopped printing.\n"),
    ("The printer stopped print \ning.\n", True, "The printer stopped printing.\n"),
    (" From the log: \nstuck.\n", False, "From the log: stuck.\n"),
    ("> quoted \n> more\nmine\n", False, "> quoted more\nmine\n"),
    ("text\n-- \nIvan\n", False, "text\n-- \nIvan\n"),
])
def test_format_flowed_is_read_as_typed(text, delsp, expected):
    from helpgate.channels.mail.parse import unflow
    assert unflow(text, delsp) == expected
