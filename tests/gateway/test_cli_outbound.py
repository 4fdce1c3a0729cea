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
