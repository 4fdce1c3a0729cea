"""A new ticket's subject: reply/forward prefixes of the supported languages and old
markers are dropped, the rest is kept as written (issue #15 item 5)."""

from __future__ import annotations

import pytest

from helpgate.threading.subjects import new_ticket_subject


@pytest.mark.parametrize("subject, kept", [
    ("[#2] Re: [#1] Принтер", "Принтер"),
    ("Re: Принтер", "Принтер"), ("RE: Принтер", "Принтер"), ("re:Принтер", "Принтер"),
    ("Fwd: Принтер", "Принтер"), ("FW: Принтер", "Принтер"),
    ("Ответ: Принтер", "Принтер"), ("Отв: Принтер", "Принтер"), ("На: Принтер", "Принтер"),
    ("Пересл: Принтер", "Принтер"), ("AW: Drucker", "Drucker"), ("WG: Drucker", "Drucker"),
    ("Antw: Drucker", "Drucker"), ("SV: Skrivare", "Skrivare"), ("VS: Tulostin", "Tulostin"),
    ("TR: Imprimante", "Imprimante"), ("RV: Impresora", "Impresora"),
    ("ENC: Impressora", "Impressora"), ("Odp: Drukarka", "Drukarka"),
    ("回复：打印机", "打印机"), ("答复: 打印机", "打印机"), ("转发: 打印机", "打印机"),
    ("Re[2]: Printer", "Printer"), ("RE(3): Printer", "Printer"),
    ("Re: Fwd: AW: [#7] Printer", "Printer"), ("Printer [#4] again", "Printer again"),
    ("Printer\u2028in\x85accounting", "Printer in accounting"),
    ("Regarding: printer", "Regarding: printer"), ("Invoice: 12", "Invoice: 12"),
    ("Reply all does not work", "Reply all does not work"), ("Re:", ""),
])
def test_prefixes_and_markers_are_dropped(subject, kept):
    assert new_ticket_subject(subject, "[#{number}]") == kept


def test_a_custom_marker_is_dropped_too():
    assert new_ticket_subject("Re: (Ticket 5) Printer", "(Ticket {number})") == "Printer"
