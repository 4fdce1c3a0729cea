"""A mutational fuzzer for the mail path: any bytes a mail server hands us must end well.

"Nothing a customer sends is lost" (R-TS-5, R-TH-9, R-CH-1, R-CH-2) has to hold for
every input, not only for the samples someone thought of, and on SQLite and PostgreSQL
alike. So we take a varied set of seed mails (tests/data, the quote corpus, mails built
here in several languages and charsets), mutate them the ways real mail is broken (byte
flips, truncation, headers duplicated and dropped, boundaries and charsets mangled, 8-bit
and NUL bytes, overlong values, deep nesting, odd Message-IDs) and push every mutant
through the in-process pipeline on each backend. Each must end decided, quarantined with
a reason, or a true duplicate of a mail kept before — with no exception caught by a
safety net on the way, no inbound row left `received`, and the same action on both
backends.

The mutants depend on the seed number and the seed mails in the tree: on one tree a failure
is reproduced by its index. Used by
tests/gateway/test_fuzz.py (a short run in CI) and bench/fuzz.py (long runs, figures, and
minimal reproducers for tests/data/fuzz/).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import logging
import os
import quopri
import random
import re
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import Header
from pathlib import Path

from sqlalchemy import select

from helpgate.channels.base import InboundMessage
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline, Result
from helpgate.ticketstore import people
from helpgate.ticketstore.models import InboundMessage as InboundRow
from helpgate.ticketstore.repository import Store

DATA = Path(__file__).parent / "data"
REPRODUCERS = DATA / "fuzz"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
ACTIONS = {"new_ticket", "comment", "reopened", "new_ticket_after_window", "ignored",
           "duplicate", "quarantined"}
# A share of mutants is an exact copy of an earlier one: the true re-delivery case.
REDELIVERY_SHARE = 0.03
# Most mutants get a Message-ID of their own first, as another mail from the same client
# would; the rest keep their seed's, so colliding Message-IDs are fuzzed as well.
FRESH_ID_SHARE = 0.7
REDELIVERY_POOL = 1000
MAX_MUTATIONS = 3


# ------------------------------------------------------------------------ seed mails
def seed_mails() -> list[tuple[str, bytes]]:
    """Every fixture mail, then the generated ones; a fixed order keeps runs reproducible."""
    files = sorted([*DATA.glob("*.eml"), *(DATA / "quotes").glob("*.eml")])
    return [(path.name, path.read_bytes()) for path in files] + generated_mails()


# (language, charset, subject, body): legacy charsets are what old clients still send.
_LANGUAGES = [
    ("ru", "windows-1251", "Не работает принтер", "Здравствуйте! Принтер не печатает."),
    ("ru", "koi8-r", "Нет доступа к почте", "Добрый день, почта не открывается."),
    ("uk", "utf-8", "Не працює VPN", "Доброго дня! VPN відключається щохвилини."),
    ("ja", "iso-2022-jp", "プリンターが動きません", "お世話になっております。印刷できません。"),
    ("ja", "shift_jis", "パスワードを忘れました", "パスワードの再設定をお願いします。"),
    ("zh", "gb2312", "无法登录系统", "您好，我无法登录系统，请帮忙。"),
    ("ko", "euc-kr", "메일이 안 와요", "안녕하세요. 메일을 받을 수 없습니다."),
    ("de", "iso-8859-1", "Drucker geht nicht", "Grüße, der Drucker im Büro druckt nicht."),
    ("el", "iso-8859-7", "Πρόβλημα με το email", "Καλημέρα, δεν λαμβάνω μηνύματα."),
    ("ar", "windows-1256", "مشكلة في الطابعة", "مرحبا، الطابعة لا تعمل."),
    ("he", "iso-8859-8", "בעיה בהדפסה", "שלום, המדפסת לא עובדת."),
    ("tr", "iso-8859-9", "Şifre sıfırlama", "Merhaba, şifremi sıfırlamak istiyorum."),
]


def generated_mails() -> list[tuple[str, bytes]]:
    """One plain, one multipart (HTML alternative, attachment with an RFC 2231 name), one
    reply to a ticket, per language; plus a bounce and a nested forward."""
    mails = []
    for index, (language, charset, subject, body) in enumerate(_LANGUAGES):
        sender = f"user{index}@example-{language}.com"
        mails.append((f"gen_{language}_{charset}_plain.eml",
                      _plain(sender, subject, body, charset, index)))
        mails.append((f"gen_{language}_{charset}_multipart.eml",
                      _multipart(sender, subject, body, charset, index)))
        mails.append((f"gen_{language}_{charset}_reply.eml",
                      _plain(sender, f"Re: [#{index + 1}] {subject}", body, charset,
                             index + 100, reply_to_ticket=index + 1)))
    mails.append(("gen_bounce.eml", _bounce()))
    mails.append(("gen_forward_nested.eml", _nested_forward()))
    return mails


def _encoded(text: str, charset: str) -> str:
    return Header(text, charset).encode()


def _head(sender: str, subject: str, charset: str, number: int, extra: str = "") -> bytes:
    name = _encoded("Клиент Тестов" if number % 2 else "Test Customer", "utf-8")
    return (f"From: {name} <{sender}>\r\nTo: support@helpgate.localhost\r\n"
            f"Subject: {_encoded(subject, charset)}\r\n"
            f"Message-ID: <gen{number}.{charset}@client.example>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0300\r\nMIME-Version: 1.0\r\n{extra}").encode()


def _plain(sender: str, subject: str, body: str, charset: str, number: int,
           reply_to_ticket: int | None = None) -> bytes:
    extra = ""
    if reply_to_ticket is not None:
        extra = f"In-Reply-To: <hg{reply_to_ticket}.0123456789abcdef@helpgate.localhost>\r\n"
        body += "\r\n\r\n> Support wrote:\r\n> Your request is registered.\r\n"
    return (_head(sender, subject, charset, number, extra)
            + f"Content-Type: text/plain; charset={charset}\r\n"
              "Content-Transfer-Encoding: 8bit\r\n\r\n".encode()
            + body.encode(charset) + b"\r\n")


def _multipart(sender: str, subject: str, body: str, charset: str, number: int) -> bytes:
    html = base64.encodebytes(f"<html><body><p>{body}</p></body></html>".encode()).decode()
    filename = f"{subject[:10]}.pdf".encode().hex()
    filename = "%".join(filename[i:i + 2] for i in range(0, len(filename), 2))
    return (_head(sender, subject, charset, number + 50,
                  'Content-Type: multipart/mixed; boundary="mix"\r\n') + (
        "\r\n--mix\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
        f"--alt\r\nContent-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode()
        + _quoted_printable(body.encode(charset)) + (
        "\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{html}--alt--\r\n"
        "--mix\r\nContent-Type: application/pdf\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''%{filename}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.encodebytes(b'%PDF-1.4 fuzz' * 20).decode()}--mix--\r\n").encode())


def _quoted_printable(data: bytes) -> bytes:
    return quopri.encodestring(data)


def _bounce() -> bytes:
    return (b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example>\r\n"
            b"To: support@helpgate.localhost\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Message-ID: <bounce1@mx.example>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n"
            b"\r\n--r\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n"
            b"\r\nFinal-Recipient: rfc822; gone@example.com\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\n\r\n--r\r\nContent-Type: message/rfc822\r\n\r\n"
            b"Message-ID: <hg3.00aa@helpgate.localhost>\r\nSubject: [#3] Re\r\n\r\nbody\r\n"
            b"--r--\r\n")


def _nested_forward() -> bytes:
    inner = (b"From: Olga <olga@romashka.ru>\r\nSubject: =?koi8-r?B?8NLJztTF0g==?=\r\n"
             b"Content-Type: text/plain; charset=koi8-r\r\n\r\n"
             + "Принтер снова сломался.".encode("koi8-r") + b"\r\n")
    return (b"From: ivan@romashka.ru\r\nTo: support@helpgate.localhost\r\n"
            b"Subject: Fwd: printer\r\nMessage-ID: <fwd1@romashka.ru>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"f\"\r\n\r\n--f\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nSee below.\r\n--f\r\n"
            b"Content-Type: message/rfc822\r\n\r\n" + inner + b"--f--\r\n")


# ------------------------------------------------------------------------- mutations
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HEADER_NAME = re.compile(rb"^([!-9;-~]+):", re.M)
_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.I)
_CHARSET = re.compile(rb'charset="?([^";\s]+)"?', re.I)
NONSENSE_CHARSETS = [b"base64", b"hex", b"\x00", b"", b"x-unknown", b"utf-7", b"utf-16",
                     b"shift_jis", b"gb2312", b"euc-kr", b"us-ascii", b"iso-8859-1",
                     b"unicode-1-1-utf-7", b"cp65001", b"utf8", b'"', b"koi8-r;;"]
EIGHT_BIT = ["Иван".encode(), "пример".encode(), b"\xff\xfe\x80\x81", "Müller".encode("latin-1"),
             "山田".encode("shift_jis"), b"\xc3\x28", b"\xed\xa0\x80"]
ODD_IDS = [b"<>", b"<" + b"9" * 25 + b"@x>", b"<hg" + b"9" * 20 + b".00ff@helpgate.localhost>",
           b"<hg18446744073709551616.0@helpgate.localhost>", b"<hg-1.0@helpgate.localhost>",
           b"<hg0.0@helpgate.localhost>", b"no brackets here", b"<a@b> <c@d> <e@f>",
           b"<" + b"x" * 700 + b"@y>", b"<\x00@nul>", "<ид@пример.рф>".encode()]


RAW_UTF8_NAME = ('Content-Type: text/plain; name="счёт №1.txt"\r\n'
                 'Content-Disposition: attachment; filename="счёт №1.txt"').encode()


def split_head(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, the blank line, body); no blank line: all header."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b"", b""
    return raw[:match.start()], raw[match.start():match.end()], raw[match.end():]


def _header_lines(head: bytes) -> list[bytes]:
    """Header fields with their folded continuation lines kept together."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _with_fields(raw: bytes, change: Callable[[list[bytes]], list[bytes]]) -> bytes:
    head, blank, body = split_head(raw)
    fields = _header_lines(head)
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    joined = b"".join(change(fields))
    return joined.rstrip(b"\r\n") + (blank or b"\r\n\r\n") + body


def flip_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[:rng.randrange(len(raw) + 1)]


def duplicate_header(rng: random.Random, raw: bytes) -> bytes:
    def change(fields):
        if fields:
            index = rng.randrange(len(fields))
            fields.insert(rng.randrange(len(fields) + 1), fields[index])
        return fields
    return _with_fields(raw, change)


def delete_header(rng: random.Random, raw: bytes) -> bytes:
    wanted = rng.choice([b"from", b"message-id", b"content-type", b"date", b"mime-version",
                         b"subject", b"content-transfer-encoding", None])

    def change(fields):
        if wanted is None and fields:
            fields.pop(rng.randrange(len(fields)))
            return fields
        return [f for f in fields if not f.lower().startswith(wanted + b":")]
    return _with_fields(raw, change)


def mangle_boundary(rng: random.Random, raw: bytes) -> bytes:
    found = _BOUNDARY.findall(raw)
    if not found:
        return raw
    boundary = rng.choice(found)
    choice = rng.randrange(5)
    if choice == 0:  # the start boundary missing
        return raw.replace(b"--" + boundary + b"\r\n", b"", 1).replace(
            b"--" + boundary + b"\n", b"", 1)
    if choice == 1:  # the end boundary missing
        return raw.replace(b"--" + boundary + b"--", b"")
    if choice == 2:  # the declared boundary is not the one used
        return raw.replace(b"boundary=\"" + boundary, b"boundary=\"x" + boundary, 1)
    if choice == 3:  # no boundary parameter at all
        return _BOUNDARY.sub(b"", raw, count=1)
    return raw.replace(boundary, b"", 1)  # an empty boundary


def mangle_charset(rng: random.Random, raw: bytes) -> bytes:
    matches = list(_CHARSET.finditer(raw))
    if not matches:
        return raw
    match = rng.choice(matches)
    return raw[:match.start(1)] + rng.choice(NONSENSE_CHARSETS) + raw[match.end(1):]


def inject_eight_bit(rng: random.Random, raw: bytes) -> bytes:
    head, blank, body = split_head(raw)
    where = rng.choice([b"From: ", b"Subject: ", b"filename=\"", b"name=\"", b"To: ", None])
    chunk = rng.choice(EIGHT_BIT)
    if where is not None and where in raw:
        index = raw.index(where) + len(where)
        return raw[:index] + chunk + raw[index:]
    index = rng.randrange(len(raw) + 1)
    return raw[:index] + chunk + raw[index:]


def inject_nul(rng: random.Random, raw: bytes) -> bytes:
    where = rng.choice([b"Subject: ", b"From: ", b"filename=\"", b"\r\n\r\n", None])
    if where is not None and where in raw:
        index = raw.index(where) + len(where)
    else:
        index = rng.randrange(len(raw) + 1)
    return raw[:index] + b"\x00" * rng.randint(1, 3) + raw[index:]


def overlong_header(rng: random.Random, raw: bytes) -> bytes:
    name, size = rng.choice([(b"Date", 150), (b"From", 400), (b"Message-ID", 600),
                             (b"Subject", 20_000), (b"To", 5_000), (b"References", 30_000)])
    if name == b"From":
        value = b"=?utf-8?B?" + base64.b64encode(b"N" * 300) + b"?= <" + b"a" * size + b"@x.com>"
    elif name == b"Message-ID":
        value = b"<" + b"m" * size + b"@x.example>"
    elif name == b"References":
        value = b" ".join(b"<r%d@x.example>" % i for i in range(size // 16))
    else:
        value = (b"abc 123,;:" * (size // 10 + 1))[:size]

    def change(fields):
        kept = [f for f in fields if not f.lower().startswith(name.lower() + b":")]
        return [name + b": " + value + b"\r\n", *kept]
    return _with_fields(raw, change)


def deep_nesting(rng: random.Random, raw: bytes) -> bytes:
    # Past 255 levels is where text used to be lost; the parser compiles a pattern per
    # boundary, so deeper costs time and finds nothing more.
    depth = rng.choice([30, 260])
    kind = rng.choice(["multipart", "rfc822"])
    head = (b"From: deep@example.com\r\nTo: support@helpgate.localhost\r\n"
            b"Subject: nested\r\nMIME-Version: 1.0\r\n")
    if kind == "rfc822":
        inner = raw
        for _ in range(depth):
            inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
        return head + inner
    opening = b"".join(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n"
                       % (i, i) for i in range(depth))
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    html = b"Content-Type: text/html\r\n\r\n<p>deep text</p>"
    return head + opening + html + closing + b"\r\n"


def odd_ids(rng: random.Random, raw: bytes) -> bytes:
    name = rng.choice([b"Message-ID", b"In-Reply-To", b"References"])
    value = rng.choice(ODD_IDS)

    def change(fields):
        kept = [f for f in fields if not f.lower().startswith(name.lower() + b":")]
        return [*kept, name + b": " + value + b"\r\n"]
    mutated = _with_fields(raw, change)
    if rng.random() < 0.3:  # a subject marker with a number no integer column holds
        mutated = mutated.replace(b"Subject: ", b"Subject: [#" + b"9" * 20 + b"] ", 1)
    return mutated


def odd_envelope(rng: random.Random, raw: bytes) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:  # an mbox envelope line first, as procmail and .mbox files have
        return b"From sender@example.com  Tue Oct 29 03:52:03 2013\n" + raw
    if choice == 1:  # a null sender
        return b"Return-Path: <>\r\n" + delete_header_named(raw, b"from")
    if choice == 2:  # bare LF, bare CR, mixed line ends
        return raw.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\n\r"]))
    if choice == 3:  # only a subject, no body
        head, _, _ = split_head(raw)
        return head + b"\r\n\r\n"
    return b"\r\n" * rng.randint(1, 3) + raw  # blank lines before the header


def _fresh_message_id(raw: bytes, message_id: str) -> bytes:
    return _with_fields(raw, lambda fields: [
        f"Message-ID: {message_id}\r\n".encode(),
        *(f for f in fields if not f.lower().startswith(b"message-id:"))])


def delete_header_named(raw: bytes, name: bytes) -> bytes:
    return _with_fields(raw, lambda fields: [
        f for f in fields if not f.lower().startswith(name + b":")])


def mangle_encoding(rng: random.Random, raw: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return re.sub(rb"(?i)content-transfer-encoding: *\S+", rng.choice(
            [b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: x-uuencode",
             b"Content-Transfer-Encoding: quoted-printable", b"Content-Transfer-Encoding: 9bit"]),
            raw, count=1)
    if choice == 1:  # encoded words that lie
        bogus = rng.choice([b"=?bogus?Q?x=FF?=", b"=?utf-8?B?!!!notbase64?=", b"=?utf-8?Q?=E2=82?=",
                            b"=?unknown-8bit?B?0J/RgNC40LLQtdGC?=", b"=?utf-8*ru?B?0J/R?="])
        return raw.replace(b"Subject: ", b"Subject: " + bogus + b" ", 1)
    if choice == 2:  # a raw UTF-8 filename, as some webmails send it
        return raw.replace(b"Content-Type: text/plain", RAW_UTF8_NAME, 1)
    return raw.replace(b"=", b"=\r\n", rng.randint(1, 20))  # broken soft line breaks


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "flip": flip_bytes, "truncate": truncate, "dup_header": duplicate_header,
    "del_header": delete_header, "boundary": mangle_boundary, "charset": mangle_charset,
    "8bit": inject_eight_bit, "nul": inject_nul, "overlong": overlong_header,
    "nesting": deep_nesting, "ids": odd_ids, "envelope": odd_envelope,
    "encoding": mangle_encoding,
}

# Slow to parse and one class of input: fewer of them keep the run short.
RARE = {"nesting": 0.25, "overlong": 0.5}


@dataclass(frozen=True)
class Mutant:
    index: int
    seed_name: str
    mutations: tuple[str, ...]
    raw: bytes

    @property
    def label(self) -> str:
        return f"#{self.index} {self.seed_name} [{'+'.join(self.mutations) or 'as is'}]"


def mutants(seed: int, count: int, seeds: list[tuple[str, bytes]] | None = None,
            ) -> Iterator[Mutant]:
    """`count` mutants, a function of `seed` alone; some are exact copies of earlier ones
    (a true re-delivery), a few seeds go in unchanged."""
    rng = random.Random(seed)
    seeds = seeds if seeds is not None else seed_mails()
    made: list[Mutant] = []
    names = sorted(MUTATIONS)
    weights = [RARE.get(name, 1.0) for name in names]
    for index in range(count):
        if made and rng.random() < REDELIVERY_SHARE:
            earlier = rng.choice(made)
            mutant = Mutant(index, earlier.seed_name, (*earlier.mutations, "again"),
                            earlier.raw)
        else:
            name, raw = rng.choice(seeds)
            if rng.random() < FRESH_ID_SHARE:
                raw = _fresh_message_id(raw, f"<fuzz{seed}.{index}@client.example>")
            applied = list(dict.fromkeys(rng.choices(names, weights,
                                                     k=rng.randint(0, MAX_MUTATIONS))))
            for mutation in applied:
                raw = MUTATIONS[mutation](rng, raw)
            mutant = Mutant(index, name, tuple(applied), raw)
        made.append(mutant)
        del made[:-REDELIVERY_POOL]  # a long run must not keep every mutant
        yield mutant


# ---------------------------------------------------------------------- running them
DIRECTORY = {
    "companies": [{"name": "Romashka LLC", "domains": ["romashka.ru"]}],
    "contacts": [{"name": "Ivan Petrov", "email": "ivan@romashka.ru", "company": "Romashka LLC"},
                 {"name": "Olga Smirnova", "email": "olga@romashka.ru"}],
    "employees": [{"name": "Anna Admin", "email": "anna@helpgate.test", "role": "admin"},
                  {"name": "Vera Agent", "email": "vera@helpgate.test", "role": "agent"}],
}
_backend: contextvars.ContextVar[str] = contextvars.ContextVar("fuzz_backend", default="parse")


@dataclass(frozen=True)
class Failure:
    """One way a mutant did not end well; `key` names its class (stable across edits)."""

    kind: str
    where: str
    backend: str
    mutant: Mutant | None
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}: {self.where}"


@dataclass
class Report:
    mutants: int = 0
    seconds: float = 0.0
    outcomes: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    batches_fell_back: Counter = field(default_factory=Counter)

    def classes(self) -> dict[str, list[Failure]]:
        found: dict[str, list[Failure]] = {}
        for failure in self.failures:
            found.setdefault(failure.key, []).append(failure)
        return found

    def summary(self) -> str:
        lines = [f"{self.mutants} mutants in {self.seconds:.1f} s "
                 f"({self.mutants / max(self.seconds, 1e-9):.0f} mutants/s per backend pair)"]
        for backend, counts in self.outcomes.items():
            lines.append(f"  {backend}: " + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(counts.items())))
        if self.batches_fell_back:
            lines.append(f"  batches that fell back to one by one: {dict(self.batches_fell_back)}")
        for key, failures in sorted(self.classes().items()):
            backends = ",".join(sorted({f.backend for f in failures}))
            first = failures[0]
            lines.append(f"  FAIL {key} [{backends}] x{len(failures)}; first: "
                         f"{first.mutant.label if first.mutant else '-'}: {first.detail[:200]}")
        return "\n".join(lines)


# What a server adds on the way: a re-delivery may differ in these and still be the same.
# Labels (charset, transfer encoding) over the same bytes lose nothing either.
IDENTITY_HEADERS = (b"from", b"date", b"subject")
_SPACE = re.compile(rb"[\s\x00-\x1f\x7f]+")  # with the control bytes a store drops


def redelivery_difference(kept: bytes, got: bytes) -> str | None:
    """None when `got` is a re-delivery of `kept`: the same text (white space and line
    ends aside) from the same sender, date and subject; else what makes it another."""
    if kept == got:
        return None
    kept_head, _, kept_body = split_head(kept)
    got_head, _, got_body = split_head(got)
    if _SPACE.sub(b"", kept_body) != _SPACE.sub(b"", got_body):
        return "other text"
    kept_fields, got_fields = _first_fields(kept_head), _first_fields(got_head)
    if any(kept_fields.get(n) != got_fields.get(n) for n in IDENTITY_HEADERS):
        return "other sender, date or subject"
    if _message_id(kept_fields) != _message_id(got_fields):
        return "other Message-ID"
    return None


def _message_id(fields: dict[bytes, bytes]) -> bytes:
    # The <id> itself: text around it in the field is not part of it.
    value = fields.get(b"message-id", b"")
    found = re.search(rb"<[^<>]*>", value)
    return found.group(0) if found else value


def _first_fields(head: bytes) -> dict[bytes, bytes]:
    """Each header's first value, as a reader takes it."""
    found: dict[bytes, bytes] = {}
    for line in _header_lines(head):
        name, colon, value = line.partition(b":")
        if colon:
            found.setdefault(name.strip().lower(), _SPACE.sub(b"", value))
    return found


class _Errors(logging.Handler):
    """helpgate's ERROR records, each with the backend it was logged for."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[tuple[str, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((_backend.get(), record))

    def take(self) -> list[tuple[str, logging.LogRecord]]:
        taken, self.records = self.records, []
        return taken


def where_raised(exc: BaseException | None) -> str:
    """`Type in file:function` at the innermost frame of helpgate's own code (the place
    to fix), with the wrapped driver error for a database exception."""
    if exc is None:
        return "no exception"
    name = type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is not None:
        # SQLAlchemy's adapter error wraps the driver's, which says what the database hated.
        name += f"({type(orig.__cause__ or orig).__name__})"
    ours = [frame for frame in traceback.extract_tb(exc.__traceback__)
            if "/site-packages/" not in frame.filename and "/lib/python" not in frame.filename]
    frames = ours or traceback.extract_tb(exc.__traceback__)
    if not frames:
        return name
    frame = frames[-1]
    parts = Path(frame.filename).parts
    return f"{name} in {'/'.join(parts[-2:])}:{frame.name}"


async def prepare(store: Store) -> Pipeline:
    """A pipeline on a fresh store with a small directory and a fixed clock."""
    config = Config(threading={"throttle_max": 0})
    pipeline = Pipeline(config, store, clock=lambda: NOW)
    await store.run(people.import_directory, people.DirectoryFile(**DIRECTORY), NOW)
    return pipeline


class Campaign:
    """Mutants through a pipeline per backend, batch by batch, checked as they go."""

    def __init__(self, pipelines: dict[str, Pipeline], batch: int = 50) -> None:
        self.pipelines = pipelines
        self.batch = batch
        self.report = Report(outcomes={name: Counter() for name in pipelines})
        self.errors = _Errors()
        self.actions: dict[str, dict[int, Result]] = {name: {} for name in pipelines}
        self.escaped: set[int] = set()
        # Batches a backend went through one by one after an escape: what its careful path
        # committed before the escape comes back as a duplicate, so no comparison there.
        self.tainted: set[int] = set()
        self.failed: set[int] = set()
        self.internal: dict[str, dict[int, tuple[Mutant, str]]] = {n: {} for n in pipelines}

    async def run(self, stream) -> Report:
        logger = logging.getLogger("helpgate")
        logger.addHandler(self.errors)
        level = logger.level
        if logger.getEffectiveLevel() > logging.ERROR:
            logger.setLevel(logging.ERROR)  # the records must exist to be seen
        started = time.perf_counter()
        try:
            chunk: list[Mutant] = []
            for mutant in stream:
                chunk.append(mutant)
                if len(chunk) == self.batch:
                    await self._batch(chunk)
                    chunk = []
            if chunk:
                await self._batch(chunk)
            for name, pipeline in self.pipelines.items():
                await self._stuck(name, pipeline.store)
        finally:
            logger.removeHandler(self.errors)
            logger.setLevel(level)
        self.report.seconds = time.perf_counter() - started
        return self.report

    async def _batch(self, chunk: list[Mutant]) -> None:
        messages = [self._parse(mutant) for mutant in chunk]
        await asyncio.gather(*(self._ingest(name, pipeline, chunk, messages)
                               for name, pipeline in self.pipelines.items()))
        self._compare(chunk)
        self.report.mutants += len(chunk)

    def _parse(self, mutant: Mutant) -> InboundMessage:
        pipeline = next(iter(self.pipelines.values()))
        message = pipeline.parse(mutant.raw)
        for _, record in self.errors.take():
            self._fail("exception", where_raised(_exc(record)), "parse", mutant,
                       record.getMessage())
        return message

    async def _ingest(self, name: str, pipeline: Pipeline, chunk: list[Mutant],
                      messages: list[InboundMessage]) -> None:
        _backend.set(name)
        try:
            results = await pipeline.ingest_many(messages)
        except Exception:
            # Escaped the careful path too: find which mutants make it escape.
            self.tainted.update(mutant.index for mutant in chunk)
            results = [await self._alone(name, pipeline, m, message)
                       for m, message in zip(chunk, messages, strict=True)]
        by_inbound = {}
        for mutant, result in zip(chunk, results, strict=True):
            if result is None:
                continue
            self.actions[name][mutant.index] = result
            self.report.outcomes[name][str(result.action)] += 1
            by_inbound[result.inbound] = mutant
            await self._check(name, pipeline.store, mutant, result)
        self._logged(name, by_inbound)

    async def _alone(self, name: str, pipeline: Pipeline, mutant: Mutant,
                     message: InboundMessage) -> Result | None:
        try:
            return (await pipeline.ingest_many([message]))[0]
        except Exception as exc:
            self.escaped.add(mutant.index)
            self._fail("escaped", where_raised(exc), name, mutant, f"{type(exc).__name__}: {exc}")
            return None

    def _logged(self, name: str, by_inbound: dict[int, Mutant]) -> None:
        """ERROR records of this backend's batch, attributed to the mutant they name."""
        mine = [r for backend, r in self.errors.records if backend == name]
        self.errors.records = [(b, r) for b, r in self.errors.records if b != name]
        for record in mine:
            if record.msg.startswith("batch of"):
                self.report.batches_fell_back[name] += 1
                continue
            inbound = record.args[0] if record.args else None
            internal = self.internal[name].pop(inbound, None)
            if internal is not None:
                self._fail("internal error", where_raised(_exc(record)), name, *internal)
                continue
            mutant = by_inbound.get(inbound) if isinstance(inbound, int) else None
            if mutant is not None and record.msg.startswith("processing inbound"):
                # In a batch gone one by one: its result is the duplicate of that row.
                self._fail("internal error", where_raised(_exc(record)), name, mutant,
                           record.getMessage())
            elif mutant is None or mutant.index not in self.escaped:
                self._fail("logged error", f"{record.msg!r}: {where_raised(_exc(record))}",
                           name, mutant, record.getMessage())
        for mutant, reason in self.internal[name].values():  # quarantined, nothing logged
            self._fail("internal error", reason.split(":")[1].strip(), name, mutant, reason)
        self.internal[name].clear()

    async def _check(self, name: str, store: Store, mutant: Mutant, result: Result) -> None:
        action, reason = str(result.action), result.reason or ""
        if action not in ACTIONS:
            self._fail("unknown action", action, name, mutant)
        elif action == "quarantined" and not reason.strip():
            self._fail("quarantined without reason", "-", name, mutant)
        elif action == "quarantined" and reason.startswith("internal error"):
            # Classified by where it was raised once its logged record is seen.
            self.internal[name][result.inbound] = (mutant, reason)
        elif action == "duplicate":
            kept = await store.run(_raw_of, result.inbound)
            difference = redelivery_difference(kept or b"", mutant.raw)
            if difference:
                self._fail("false duplicate", difference, name, mutant,
                           f"{reason}; kept {len(kept or b'')} bytes, got {len(mutant.raw)}")

    def _compare(self, chunk: list[Mutant]) -> None:
        if len(self.pipelines) < 2:
            return
        for mutant in chunk:
            results = {name: actions.get(mutant.index) for name, actions in self.actions.items()}
            if (mutant.index in self.tainted or mutant.index in self.failed
                    or None in results.values()):
                continue
            seen = {str(r.action) for r in results.values()}
            if len(seen) > 1:
                pair = " vs ".join(f"{str(r.action)} on {n}" for n, r in results.items())
                detail = "; ".join(f"{n}: {r.reason}" for n, r in results.items())
                self._fail("backends disagree", pair, "all", mutant, detail)

    async def _stuck(self, name: str, store: Store) -> None:
        inbound_to_mutant = {r.inbound: i for i, r in self.actions[name].items()}
        for inbound in await store.run(_received):
            index = inbound_to_mutant.get(inbound)
            # Only its index is kept: mutants(seed, index + 1) makes it again.
            mutant = None if index is None else Mutant(index, "(by index)", (), b"")
            self._fail("left received", "undecided inbound row", name, mutant,
                       f"inbound {inbound}")

    def _fail(self, kind: str, where: str, backend: str, mutant: Mutant | None,
              detail: str = "") -> None:
        self.report.failures.append(Failure(kind, where, backend, mutant, detail))
        if mutant is not None:
            # Its other symptoms (the backends then disagree) are this failure, not more.
            self.failed.add(mutant.index)


def _exc(record: logging.LogRecord) -> BaseException | None:
    return record.exc_info[1] if record.exc_info else None


def _raw_of(session, inbound_id: int) -> bytes | None:
    return session.scalar(select(InboundRow.raw).where(InboundRow.id == inbound_id))


def _received(session) -> list[int]:
    return list(session.scalars(select(InboundRow.id).where(InboundRow.state == "received")))


# ----------------------------------------------------------------------- scratch stores
PG_URL = os.environ.get("HELPGATE_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


class PostgresUnavailable(Exception):
    """The PostgreSQL of the tests cannot be reached."""


@contextlib.asynccontextmanager
async def scratch_store(backend: str, folder: Path) -> AsyncIterator[Store]:
    """A fresh store: an SQLite file in `folder`, or a schema of its own in PostgreSQL."""
    if backend == "sqlite":
        store = Store(f"sqlite:///{folder / f'fuzz-{uuid.uuid4().hex[:8]}.db'}")
        await store.ensure_schema()
        try:
            yield store
        finally:
            await store.close()
        return
    import asyncpg
    schema = f"fuzz_{uuid.uuid4().hex[:12]}"
    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise PostgresUnavailable(f"PostgreSQL at {dsn} unavailable: {exc}") from exc
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        store = Store(PG_URL, connect_args={"server_settings": {"search_path": schema}})
        try:
            await store.ensure_schema()
            yield store
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def fuzz(backends: list[str], folder: Path, stream, batch: int = 50) -> Report:
    """One campaign on fresh stores of every backend named."""
    async with contextlib.AsyncExitStack() as stack:
        pipelines = {}
        for backend in backends:
            store = await stack.enter_async_context(scratch_store(backend, folder))
            pipelines[backend] = await prepare(store)
        return await Campaign(pipelines, batch).run(stream)


async def reproduces(raw: bytes, key: str, backends: list[str], folder: Path) -> bool:
    """Whether `raw` alone, on fresh stores, shows the failure class `key` (a parser
    failure needs no store: it is checked by parsing alone, which is much faster)."""
    mutant = Mutant(0, "candidate", (), raw)
    if backends == ["parse"]:
        campaign = Campaign({"parse": Pipeline(Config(), None)})  # parse needs no store
        logger = logging.getLogger("helpgate")
        logger.addHandler(campaign.errors)
        try:
            campaign._parse(mutant)
        finally:
            logger.removeHandler(campaign.errors)
        return key in campaign.report.classes()
    report = await fuzz(backends, folder, [mutant])
    return key in report.classes()


async def minimize(raw: bytes, still_fails, budget: int = 300) -> bytes:
    """A smaller input that still fails: whole lines dropped first, then byte runs of
    halving size (delta debugging, greedy), within `budget` tries."""
    tries = 0
    for split in (_lines, _bytes):
        size = 0
        while True:
            units = split(raw)
            size = max(1, len(units) // 2) if size == 0 else size // 2
            if size == 0 or tries >= budget:
                break
            start = 0
            while start < len(units) and tries < budget:
                candidate = b"".join(units[:start] + units[start + size:])
                tries += 1
                if candidate != raw and await still_fails(candidate):
                    raw, units = candidate, split(candidate)
                else:
                    start += size
    return raw


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def _bytes(raw: bytes) -> list[bytes]:
    return [raw[i:i + 1] for i in range(len(raw))]
