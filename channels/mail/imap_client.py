"""aioimaplib's client with a response reader that costs time linear in what the server sent.

aioimaplib reads a response line by line in a way that made reading a backlog the largest
CPU cost of the gateway's event loop, stealing the interpreter from the thread that
stores mail (bench/imap_ingest.py found it):

- after every line of a FETCH answer it scans every line received so far for the last
  `* n FETCH (` line (`FetchCommand.wait_data`): quadratic in the lines of one answer;
- it cuts each line off with `bytes.partition`, copying the rest of the chunk every time:
  quadratic in the lines of one chunk read off the socket;
- it recurses once per line (twice per message with a body), so an answer of a thousand
  lines raised RecursionError inside the library;
- it formats every chunk received for a debug line, with debug logging off.

`Protocol._handle_responses` below is the same reading, step for step (the same line
handler, the same literal handling, the same IncompleteRead at the end of a chunk), as a
loop over offsets into the chunk, with the FETCH scan resumed where it left off. Only
this reading is replaced; commands, states and responses are aioimaplib's own.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import aioimaplib
from aioimaplib.aioimaplib import (
    CRLF,
    IncompleteRead,
    literal_data_re,
    matched_parenthesis,
)

wire_log = logging.getLogger("aioimaplib.aioimaplib")
_FETCH_START = aioimaplib.FetchCommand.FETCH_MESSAGE_DATA_RE


class Protocol(aioimaplib.IMAP4ClientProtocol):
    def data_received(self, d: bytes) -> None:
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("Received : %s", d)
        try:
            self._handle_responses(self.incomplete_line + d if self.incomplete_line else d,
                                   self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except IncompleteRead as incomplete_read:
            self.current_command = incomplete_read.cmd
            self.incomplete_line = incomplete_read.data

    def _handle_responses(self, data: bytes,
                          line_handler: Callable[[bytes, aioimaplib.Command],
                                                 aioimaplib.Command | None],
                          current_cmd: aioimaplib.Command | None = None) -> None:
        data = bytes(data)
        view = memoryview(data)
        end = len(data)
        at = 0
        while True:
            if at == end:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and _waits_for_data(current_cmd):
                    raise IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                rest = current_cmd.append_literal_data(view[at:])
                at = end - len(rest)
                if current_cmd.wait_literal_data():
                    raise IncompleteRead(current_cmd)
            line_end = data.find(CRLF, at)
            if line_end < 0:
                raise IncompleteRead(current_cmd, data[at:])
            line = data[at:line_end]
            at = line_end + len(CRLF)
            cmd = line_handler(line, current_cmd)
            begin_literal = literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = aioimaplib.Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                current_cmd = cmd
            elif cmd is not None and _waits_for_data(cmd):
                current_cmd = cmd
            else:
                current_cmd = None


def _waits_for_data(command: aioimaplib.Command) -> bool:
    """`command.wait_data()`; for a FETCH, its scan for the last `* n FETCH (` line
    resumed where the previous call left off (the lines only grow)."""
    if type(command).wait_data is not aioimaplib.FetchCommand.wait_data:
        return command.wait_data()
    lines = command._resp_lines
    scanned, last = getattr(command, "_helpgate_scan", (0, 0))
    for index in range(scanned, len(lines)):
        line = lines[index]
        if isinstance(line, bytes) and _FETCH_START.match(line):
            last = index
    command._helpgate_scan = (len(lines), last)
    return not matched_parenthesis(
        b"".join(line for line in lines[last:] if isinstance(line, bytes)))


class Client(aioimaplib.IMAP4):
    """aioimaplib.IMAP4 speaking through `Protocol`."""

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Callable[[Exception | None], None] | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(local_loop.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context))
