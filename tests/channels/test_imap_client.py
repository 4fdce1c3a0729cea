"""The IMAP response reader (channels/mail/imap_client.py) reads what aioimaplib's own
reads, however the server's bytes are cut into chunks, and reads answers aioimaplib's
fails on. The whole reader against a real Dovecot is tests/channels/test_imap.py."""

from __future__ import annotations

import asyncio
import random

import aioimaplib
import pytest

from helpgate.channels.mail.imap_client import Protocol


class Transport:
    """What the protocol writes, kept: the tag of the command sent is in it."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name, default=None):
        return default


def _body(n: int) -> bytes:
    # What a reader must not take for protocol: parentheses, a line ending in a literal
    # marker, a tagged-looking line, an untagged-looking line, all inside the literal.
    return (f"Subject: Заявка {n} (срочно)\r\nFrom: a@b.example\r\n\r\n"
            f"Текст ((( {n}\r\nA1 OK done\r\n* 9 EXISTS\r\nsee {{12}}\r\n)\r\n"
            ).encode() * (1 + n % 3)


def _fetch_answer(tag: str, count: int) -> bytes:
    parts = []
    for n in range(1, count + 1):
        body = _body(n)
        parts.append(f"* {n} FETCH (UID {100 + n} BODY[] {{{len(body)}}}\r\n".encode()
                     + body + b")\r\n")
        if n == count // 2:
            parts.append(b"* 40 EXISTS\r\n")  # new mail told mid-answer
    parts.append(f"{tag} OK Fetch completed.\r\n".encode())
    return b"".join(parts)


def _sizes_answer(tag: str, count: int) -> bytes:
    return b"".join([*(f"* {n} FETCH (UID {n} RFC822.SIZE {1000 + n})\r\n".encode()
                       for n in range(1, count + 1)),
                     f"{tag} OK Fetch completed.\r\n".encode()])


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """data cut at random places: single bytes, a CR apart from its LF, large runs."""
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(data):
        size = rng.choice([1, 2, rng.randint(1, 40), rng.randint(1, 5000), 65536])
        chunks.append(data[at:at + size])
        at += size
    return chunks


async def _read(protocol_class, answer, parts: str, seed: int | None):
    protocol = protocol_class(asyncio.get_running_loop(), None)
    transport = Transport()
    protocol.connection_made(transport)
    protocol.state = aioimaplib.SELECTED
    fetching = asyncio.ensure_future(protocol.uid("fetch", "1:*", parts))
    await asyncio.sleep(0)
    tag = transport.written.split(b" ", 1)[0].decode()
    data = answer(tag)
    for chunk in _chunks(data, seed) if seed is not None else [data]:
        protocol.data_received(chunk)
    response = await asyncio.wait_for(fetching, 5)
    return response.result, [bytes(line) for line in response.lines]


def _odd_answer(tag: str) -> bytes:
    """What servers also send: an empty literal, a body given as NIL, two literals in
    one item, flags after the literal, an untagged line the command does not own."""
    head, text = _body(1).split(b"\r\n\r\n", 1)
    return (b"* 1 FETCH (UID 7 BODY[] {0}\r\n)\r\n"
            b"* 2 FETCH (UID 8 BODY[] NIL)\r\n"
            + f"* 3 FETCH (UID 9 BODY[HEADER] {{{len(head)}}}\r\n".encode() + head
            + f" BODY[TEXT] {{{len(text)}}}\r\n".encode() + text + b" FLAGS (\\Seen))\r\n"
            b"* OK [ALERT] still here\r\n"
            + f"{tag} OK Fetch completed (0.001 + 0.000 secs).\r\n".encode())


ANSWERS = {"bodies": (lambda tag: _fetch_answer(tag, 30), "(UID BODY.PEEK[])", 30 * 3 + 1),
           "sizes": (lambda tag: _sizes_answer(tag, 150), "(UID RFC822.SIZE)", 151),
           "odd": (_odd_answer, "(UID BODY.PEEK[])", 10)}


@pytest.mark.parametrize("seed", [None, *range(12)])
@pytest.mark.parametrize("kind", ANSWERS)
async def test_an_answer_reads_as_aioimaplibs_own_reader_reads_it(kind, seed):
    answer, parts, lines = ANSWERS[kind]
    ours = await _read(Protocol, answer, parts, seed)
    theirs = await _read(aioimaplib.IMAP4ClientProtocol, answer, parts, seed)
    assert ours == theirs
    assert ours[0] == "OK"
    assert len(ours[1]) == lines
    if kind == "bodies":
        assert [line for line in ours[1] if line.startswith(b"Subject:")] == [
            _body(n) for n in range(1, 31)]


@pytest.mark.parametrize("seed", [None, 3])
async def test_an_answer_of_many_thousand_lines_is_read_whole(seed):
    """aioimaplib's reader recursed once per line: an answer of a thousand lines raised
    RecursionError inside it, and the command was never answered."""
    result, lines = await _read(Protocol, lambda tag: _sizes_answer(tag, 20000),
                                "(UID RFC822.SIZE)", seed)
    assert result == "OK"
    assert len(lines) == 20001
    assert lines[19999] == b"20000 FETCH (UID 20000 RFC822.SIZE 21000)"


async def test_a_large_fetch_answer_is_read_whole():
    result, lines = await _read(Protocol, lambda tag: _fetch_answer(tag, 3000),
                                "(UID BODY.PEEK[])", 5)
    assert result == "OK"
    bodies = [line for line in lines if line.startswith(b"Subject:")]
    assert len(bodies) == 3000
    assert bodies[-1] == _body(3000)
