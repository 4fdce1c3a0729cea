"""What the CLI shows of a ticket and what leaves it (issue #15): ticket times, stored
attachments and their export."""

from __future__ import annotations

from tests.mailfactory import mail


def test_resolution_time_is_null_until_the_ticket_is_resolved(hg):
    """R-TS-4: only a resolved ticket has a resolution time."""
    number = hg.ingest(mail())["ticket"]
    assert hg.ticket(number)["resolution_seconds"] is None
    assert hg.run("status", str(number), "resolved")[0] == 0
    assert isinstance(hg.ticket(number)["resolution_seconds"], float)
    hg.ingest(mail(subject=f"Re: [#{number}] Не работает принтер", body="Снова не печатает."))
    reopened = hg.ticket(number)
    assert reopened["status"] == "open" and reopened["resolution_seconds"] is None


def test_a_follow_up_ticket_drops_the_old_marker_and_reply_prefixes(hg):
    """A reply to a closed ticket opens a new one titled like the original request."""
    hg.ingest(mail(subject="Не печатает принтер"))
    for status in ("resolved", "closed"):
        assert hg.run("status", "1", status)[0] == 0
    result = hg.ingest(mail(subject="Ответ: RE: [#1] Не печатает принтер", body="Опять."))
    assert (result["action"], result["ticket"]) == ("new_ticket_after_window", 2)
    assert hg.ticket(2)["subject"] == "Не печатает принтер"
    acks = [row["subject"] for row in hg.outbox() if row["kind"] == "ack"]
    assert acks == ["[#1] Не печатает принтер", "[#2] Не печатает принтер"]
