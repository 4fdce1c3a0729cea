"""Reopen windows through the CLI with the system clock moved by faketime (R-TH-6): within
the window a reply reopens the resolved ticket, after it a new linked ticket opens; "0",
"forever", a rule per ticket type and a rule per channel (first match wins)."""

from __future__ import annotations

import pytest

from tests.gateway.cli_helpers import Helpgate

REPLY = "reply_marker_gmail_ru.eml"


def resolved_ticket(hg: Helpgate, *ingest_args: str) -> None:
    assert hg.ingest("new_request_gmail_ru.eml", *ingest_args)["ticket"] == 1
    hg.json("status", "1", "resolved")


@pytest.mark.parametrize("config, offset, action", [
    ("", "+6d", "reopened"),
    ("", "+8d", "new_ticket_after_window"),
    ('[reopen]\ndefault = "0"\n', "+1m", "new_ticket_after_window"),
    ('[reopen]\ndefault = "forever"\n', "+400d", "reopened"),
    ('[reopen]\ndefault = "36h"\n', "+35h", "reopened"),
    ('[reopen]\ndefault = "36h"\n', "+37h", "new_ticket_after_window"),
])
def test_default_window(hg, config, offset, action):
    hg.configure(config)
    resolved_ticket(hg)
    result = hg.at(offset, "ingest", str(hg.file(REPLY)))
    assert result["action"] == action
    if action == "reopened":
        assert result["ticket"] == 1 and hg.ticket(1)["status"] == "open"
        assert [h["to"] for h in hg.ticket(1)["status_history"]] == ["open", "resolved", "open"]
    else:
        assert (result["ticket"], result["previous_ticket"]) == (2, 1)
        assert hg.ticket(1)["status"] == "resolved"
        assert hg.ticket(2)["linked_tickets"] == [1] and hg.ticket(1)["linked_tickets"] == [2]
        assert hg.ticket(2)["comments"][0]["text"] == "Спасибо, принтер заработал!\nИван"


def test_rule_per_ticket_type(hg):
    hg.configure('[[reopen.rules]]\ntype = "incident"\nwindow = "0"\n')
    resolved_ticket(hg, "--type", "incident")
    assert hg.ticket(1)["type"] == "incident"
    result = hg.at("+1h", "ingest", str(hg.file(REPLY)))
    assert (result["action"], result["previous_ticket"]) == ("new_ticket_after_window", 1)
    assert "reopen.rules[0]" in result["reason"]
    assert hg.ticket(2)["type"] == "incident"


def test_rule_for_another_type_does_not_apply(hg):
    hg.configure('[[reopen.rules]]\ntype = "incident"\nwindow = "0"\n')
    resolved_ticket(hg)
    result = hg.at("+1h", "ingest", str(hg.file(REPLY)))
    assert result["action"] == "reopened" and "reopen.default" in result["reason"]


def test_rule_per_channel_first_match_wins(hg):
    hg.configure('[[reopen.rules]]\nchannel = "telegram"\nwindow = "forever"\n'
                 '[[reopen.rules]]\nchannel = "email"\nwindow = "1h"\n'
                 '[[reopen.rules]]\nchannel = "email"\nwindow = "30d"\n')
    resolved_ticket(hg)
    result = hg.at("+2h", "ingest", str(hg.file(REPLY)))
    assert result["action"] == "new_ticket_after_window"
    assert "reopen.rules[1]" in result["reason"]
