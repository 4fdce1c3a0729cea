"""The operator's commands (#15.13): --version, a one-line error for an unknown status,
"none" for an empty listing, the last relay error in `helpgate outbox`, and looking into
and dropping a quarantined message — dropped messages keep their raw bytes and reasons."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from helpgate.config.load import load_config
from helpgate.gateway.cli import main
from helpgate.gateway.run import utcnow
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore.repository import Store
from tests.conftest import DATA
from tests.mailfactory import mail


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("helpgate 0.")


def test_an_unknown_status_filter_is_one_line_and_exit_1(hg):
    code, out, err = hg.run("tickets", "--status", "nonsense")
    assert (code, out) == (1, "")
    assert err == ("helpgate: error: unknown status 'nonsense'; known: open, pending, "
                   "resolved, closed\n")


@pytest.mark.parametrize("command", [["tickets"], ["tickets", "--status", "closed"],
                                     ["outbox"], ["quarantine", "list"],
                                     ["quarantine", "list", "--dropped"]])
def test_empty_listings_say_none(hg, command):
    assert hg.run(*command) == (0, "none\n", "")


def test_an_empty_directory_says_none(tmp_path, monkeypatch, capsys):
    from tests.gateway.cli_helpers import Helpgate
    assert Helpgate(tmp_path, monkeypatch, capsys).run("directory", "list") == (0, "none\n", "")


async def test_a_relay_refusal_is_logged_as_warning_and_shown_by_outbox(hg, relay, caplog):
    relay.handler.data_answer = "554 5.7.1 Rejected by local policy"
    # The gateway's outbox worker, run here for one round against the CLI's database.
    hg.configure(f'[mail.smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'
                 '[notifications]\nemployees = "none"\n')
    await asyncio.to_thread(hg.ingest, mail())
    config = load_config(hg.config)
    store = Store(config.database.url)
    try:
        worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, utcnow)
        with caplog.at_level(logging.INFO, logger="helpgate.outbox"):
            assert await worker.run_once() == 1
    finally:
        await store.close()
    [record] = [r for r in caplog.records if r.name == "helpgate.outbox"]
    assert record.levelno == logging.WARNING and "Rejected by local policy" in record.message
    code, out, _ = await asyncio.to_thread(hg.run, "outbox")
    assert code == 0
    assert out.rstrip("\n").split("\t")[1] == "parked"
    assert "\terror: relay answered 554 5.7.1 Rejected by local policy" in out


def test_quarantine_show_gives_headers_reason_and_size(hg):
    inbound = hg.ingest("no_sender.eml")["inbound"]
    shown = hg.json("quarantine", "show", str(inbound), "--json")
    assert shown["state"] == "quarantined" and shown["reason"]
    assert shown["size"] == len((DATA / "no_sender.eml").read_bytes())
    headers = dict(shown["headers"])
    assert headers["Subject"] == "Без отправителя"
    assert headers["Message-ID"] == "<nosender-1@relay.example>"
    code, out, _ = hg.run("quarantine", "show", str(inbound))
    assert code == 0
    assert f"message {inbound}: quarantined (email, {shown['size']} bytes" in out
    assert f"reason: {shown['reason']}" in out and "  Subject: Без отправителя" in out


def test_quarantine_show_refuses_what_is_not_quarantined(hg):
    inbound = hg.ingest(mail())["inbound"]
    assert hg.run("quarantine", "show", str(inbound))[2] == (
        f"helpgate: error: message {inbound} is processed, not quarantined\n")
    assert hg.run("quarantine", "show", "99")[2] == (
        "helpgate: error: no quarantined message 99\n")


def test_a_dropped_message_is_kept_with_its_reasons(hg):
    inbound = hg.ingest("no_sender.eml")["inbound"]
    before = hg.json("quarantine", "show", str(inbound), "--json")
    dropped = hg.json("quarantine", "drop", str(inbound), "--reason", "a test from the admin")
    assert dropped["state"] == "dropped"
    assert dropped["dropped"]["reason"] == "a test from the admin"
    assert dropped["dropped"]["quarantine_reason"] == before["reason"]
    assert hg.run("quarantine", "list") == (0, "none\n", "")
    [listed] = hg.json("quarantine", "list", "--dropped", "--json")
    assert (listed["id"], listed["dropped"]["reason"]) == (inbound, "a test from the admin")
    after = hg.json("quarantine", "show", str(inbound), "--json")
    assert (after["state"], after["size"], after["headers"]) == (
        "dropped", before["size"], before["headers"])
    # Dropped is final for the pipeline: no replay, no second drop.
    assert hg.run("quarantine", "replay", str(inbound))[2] == (
        f"helpgate: error: message {inbound} is dropped, not quarantined\n")
    assert hg.run("quarantine", "drop", str(inbound), "--reason", "again")[0] == 1


def test_a_drop_needs_a_reason_and_changes_nothing_without_one(hg):
    inbound = hg.ingest("no_sender.eml")["inbound"]
    code, _, err = hg.run("quarantine", "drop", str(inbound), "--reason", "  ")
    assert code == 1 and err.startswith("helpgate: error: a reason is needed")
    assert hg.json("quarantine", "show", str(inbound), "--json")["state"] == "quarantined"


def test_quarantine_show_also_shows_a_message_stuck_undecided(hg):
    inbound = hg.ingest("no_sender.eml")["inbound"]
    # As a decision that failed and could not be quarantined leaves it.
    with sqlite3.connect(hg.tmp / "helpgate.db") as connection:
        connection.execute("UPDATE inbound_messages SET state = 'received', reason = NULL "
                           "WHERE id = ?", (inbound,))
    shown = hg.json("quarantine", "show", str(inbound), "--json")
    assert shown["state"] == "received" and shown["reason"].startswith("undecided")
    assert dict(shown["headers"])["Subject"] == "Без отправителя"
    # Dropping is for quarantined messages only: a stuck one is retried by the gateway.
    code, _, err = hg.run("quarantine", "drop", str(inbound), "--reason", "stuck")
    assert code == 1 and "is received, not quarantined" in err


def test_a_customers_rating_is_shown_on_the_ticket(hg):
    number = hg.ingest(mail())["ticket"]
    code, out, _ = hg.run("ticket", str(number))
    assert code == 0 and "rated" not in out
    with sqlite3.connect(hg.tmp / "helpgate.db") as connection:
        connection.execute("UPDATE tickets SET rating = 4, rated_at = '2026-11-30 10:00:00' "
                           "WHERE number = ?", (number,))
    code, out, _ = hg.run("ticket", str(number))
    assert code == 0 and "rated by the customer: 4 of 5" in out
    shown = hg.json("ticket", str(number), "--json")
    assert (shown["rating"], shown["rated_at"][:10]) == (4, "2026-11-30")
