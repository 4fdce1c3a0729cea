"""Every threading scenario of the foundation, through `helpgate ingest` on .eml fixtures
modelled on real clients (R-TH-1..R-TH-9, R-TS-5, R-OUT-3): what a new user of the CLI
sees. Window scenarios move the clock with faketime (test_cli_windows.py)."""

from __future__ import annotations

import pytest

from tests.gateway.cli_helpers import template
from tests.mailfactory import mail

SEPARATOR = "##- Пожалуйста, пишите ответ выше этой строки -##"


def test_new_request_opens_a_ticket_and_acknowledges_it(hg):
    result = hg.ingest("new_request_gmail_ru.eml")
    assert result == {"action": "new_ticket", "ticket": 1, "previous_ticket": None,
                      "comment": 1, "rules": ["sender_identity"],
                      "reason": "sender_identity: contact ivan@romashka.ru", "inbound": 1}
    ticket = hg.ticket(1)
    assert (ticket["subject"], ticket["status"], ticket["channel"]) == (
        "Не печатает принтер", "open", "email")
    assert ticket["contact"]["email"] == "ivan@romashka.ru"
    assert ticket["company"] == {"name": "Romashka LLC"}
    comment = ticket["comments"][0]
    assert comment["author"]["kind"] == "contact" and comment["public"] is True
    assert comment["text"].endswith("Иван Петров\nООО «Ромашка»\n+7 916 123-45-67")
    ack = [row for row in hg.outbox() if row["kind"] == "ack"]
    assert len(ack) == 1 and ack[0]["to"] == "ivan@romashka.ru"
    assert ack[0]["subject"] == "[#1] Не печатает принтер"
    assert ack[0]["text"].startswith(SEPARATOR)
    assert ack[0]["headers"]["Auto-Submitted"] == "auto-replied"
    assert ack[0]["message_id"].startswith("<hg1.") and ack[0]["state"] == "queued"


def test_marker_reply_keeps_only_the_new_words(hg):
    hg.ingest("new_request_gmail_ru.eml")
    result = hg.ingest("reply_marker_gmail_ru.eml")
    assert (result["action"], result["ticket"]) == ("comment", 1)
    assert result["rules"][0] == "subject_marker"
    assert hg.ticket(1)["comments"][1]["text"] == "Спасибо, принтер заработал!\nИван"


def test_koi8r_reply_from_yandex(hg):
    hg.ingest("new_request_gmail_ru.eml")
    assert hg.ingest("reply_marker_yandex_koi8r.eml")["ticket"] == 1
    assert hg.ticket(1)["comments"][1]["text"] == "Проверили ещё раз - снова не печатает."


def test_reply_that_lost_the_marker_threads_by_references(hg):
    hg.ingest("new_request_gmail_ru.eml")
    ours = hg.outbox()[0]["message_id"]
    reply = template("reply_lost_marker_outlook_ru.eml", IN_REPLY_TO=ours,
                     REFERENCES=f"<CAF7x2mN1hR9kq0d=Yp3sQ@mail.gmail.com> {ours}")
    result = hg.ingest(reply)
    assert (result["action"], result["ticket"]) == ("comment", 1)
    assert result["rules"][0] == "references"
    assert hg.ticket(1)["comments"][1]["text"] == (
        "Добрый день.\n\nХорошо, ждём мастера завтра.\n\n"
        "С уважением,\nОльга Смирнова\nбухгалтер ООО «Ромашка»")


def test_reply_to_a_stored_customer_mail_threads_too(hg):
    hg.ingest("new_request_gmail_ru.eml")
    follow_up = mail(subject="ещё вопрос", body="И сканер тоже.",
                     in_reply_to="<CAF7x2mN1hR9kq0d=Yp3sQ@mail.gmail.com>")
    assert hg.ingest(follow_up)["ticket"] == 1


def test_marker_of_a_missing_ticket_opens_a_new_one(hg):
    result = hg.ingest("marker_nonexistent.eml")
    assert (result["action"], result["ticket"]) == ("new_ticket", 1)
    assert "[#999] names no ticket" in result["reason"]


def test_unknown_sender_from_a_company_domain_is_bound_to_it(hg):
    result = hg.ingest("new_company_domain.eml")
    assert "company_domain" in result["rules"]
    ticket = hg.ticket(result["ticket"])
    assert ticket["company"] == {"name": "Romashka LLC"}
    assert ticket["contact"] == {"email": "maria@romashka.ru", "name": "Мария", "phone": None}


def test_public_mail_domains_never_match_a_company(hg):
    hg.directory({"companies": [{"name": "Fans", "domains": ["gmail.com"]}]})
    result = hg.ingest("new_public_domain_gmail.eml")
    assert "company_domain" not in result["rules"]
    assert "gmail.com is a public mail domain" in result["reason"]
    assert hg.ticket(result["ticket"])["company"] is None


def test_unknown_sender_without_contact_creation(hg):
    hg.configure("[threading]\ncreate_contacts = false\n")
    result = hg.ingest("new_public_domain_gmail.eml")
    ticket = hg.ticket(result["ticket"])
    assert ticket["contact"] is None
    assert ticket["comments"][0]["author"] == {"kind": "employee",
                                               "email": "anna@helpgate.test",
                                               "name": "Anna Admin"}
    assert hg.json("directory", "list", "--json")["contacts"][-1]["email"] == "olga@romashka.ru"


def test_unknown_sender_with_contact_creation(hg):
    result = hg.ingest("new_public_domain_gmail.eml")
    assert "unknown_sender" in result["rules"]
    ticket = hg.ticket(result["ticket"])
    assert ticket["contact"]["email"] == "romashka.fan@gmail.com"
    assert ticket["comments"][0]["author"]["kind"] == "contact"


def test_employee_reply_is_their_comment_and_reaches_the_customer(hg):
    hg.ingest("new_request_gmail_ru.eml")
    # Anna answers her notification: her client writes to its Reply-To (issue #15).
    [notice] = [r for r in hg.outbox() if r["to"] == "anna@helpgate.test"]
    result = hg.ingest(template("employee_reply_thunderbird.eml").replace(
        b"To: Support <support@helpgate.localhost>",
        f"To: {notice['headers']['Reply-To']}".encode()))
    comment = hg.ticket(1)["comments"][1]
    assert comment["author"] == {"kind": "employee", "email": "anna@helpgate.test",
                                 "name": "Anna Admin"}
    assert comment["text"] == "Иван, замените, пожалуйста, картридж — он закончился.\n\nАнна"
    relayed = [row for row in hg.outbox() if row["comment"] == result["comment"]]
    assert [(row["kind"], row["to"]) for row in relayed] == [("comment", "ivan@romashka.ru")]
    assert relayed[0]["subject"].startswith("[#1]")
    assert hg.ticket(1)["first_response_seconds"] is not None


def test_unknown_sender_on_an_existing_ticket_writes_as_the_earliest_admin(hg):
    hg.ingest("new_request_gmail_ru.eml")
    result = hg.ingest("unknown_sender_on_ticket.eml")
    assert (result["action"], result["ticket"]) == ("comment", 1)
    author = hg.ticket(1)["comments"][1]["author"]
    assert author["email"] == "anna@helpgate.test"
    assert hg.json("directory", "list", "--json")["contacts"][-1]["email"] != (
        "pavel@other-firm.example")


def test_waiting_for_customer_returns_to_open(hg):
    hg.ingest("new_request_gmail_ru.eml")
    hg.json("status", "1", "pending", "--until", "2099-01-01T00:00:00+00:00")
    result = hg.ingest("reply_marker_gmail_ru.eml")
    assert "waiting_for_customer" in result["rules"]
    ticket = hg.ticket(1)
    assert ticket["status"] == "open" and ticket["pending_until"] is None
    assert [h["to"] for h in ticket["status_history"]] == ["open", "pending", "open"]


def test_closed_final_ticket_spawns_a_linked_new_one(hg):
    hg.ingest("new_request_gmail_ru.eml")
    hg.json("status", "1", "resolved")
    hg.json("status", "1", "closed")
    result = hg.ingest("reply_marker_gmail_ru.eml")
    assert (result["action"], result["ticket"], result["previous_ticket"]) == (
        "new_ticket_after_window", 2, 1)
    assert hg.ticket(2)["linked_tickets"] == [1]
    assert hg.ticket(1)["linked_tickets"] == [2]
    assert hg.ticket(1)["status"] == "closed"
    assert hg.ticket(2)["contact"]["email"] == "ivan@romashka.ru"


@pytest.mark.parametrize("fixture", ["ooo_exchange_ru.eml", "autoreply_yandex.eml",
                                     "own_notification_loop.eml"])
def test_robots_and_our_own_mail_are_ignored_without_acknowledgement(hg, fixture):
    hg.ingest("new_request_gmail_ru.eml")
    before = hg.outbox()
    result = hg.ingest(fixture)
    assert (result["action"], result["ticket"], result["comment"]) == ("ignored", None, None)
    assert result["reason"]
    assert hg.outbox() == before
    assert len(hg.ticket(1)["comments"]) == 1


def test_bounce_is_recorded_against_the_message_it_reports(hg):
    hg.ingest("new_request_gmail_ru.eml")
    ack = hg.outbox()[0]
    queued = len(hg.outbox())
    result = hg.ingest(template("bounce_dsn_postfix.eml", ORIGINAL_ID=ack["message_id"]))
    assert (result["action"], result["rules"]) == ("ignored", ["bounce"])
    row = next(r for r in hg.outbox() if r["id"] == ack["id"])
    assert row["bounces"][0]["status"] == "5.1.1"
    assert row["bounces"][0]["recipient"] == "nobody@romashka.ru"
    assert len(hg.outbox()) == queued
    assert len(hg.json("tickets", "--json")) == 1


def test_same_message_twice_is_a_duplicate(hg):
    first = hg.ingest("new_request_gmail_ru.eml")
    queued = len(hg.outbox())
    again = hg.ingest("new_request_gmail_ru.eml")
    assert (again["action"], again["ticket"], again["comment"]) == ("duplicate", 1, None)
    assert again["inbound"] == first["inbound"]
    assert len(hg.json("tickets", "--json")) == 1 and len(hg.outbox()) == queued


@pytest.mark.parametrize("fixture, words", [
    ("body_windows1251_thebat.eml", "Не удаётся подключиться к 1С: ошибка «Сервер недоступен»."),
    ("body_koi8r_thunderbird.eml", "Почта не уходит, пишет 'превышен лимит отправки'."),
    ("body_unknown_charset.eml", "Истёк пароль от почты, прошу сбросить."),
    ("html_only_outlook_web.eml", "Просим выставить счёт на продление лицензий — 15 рабочих мест."),
])
def test_charsets_and_html_become_readable_text(hg, fixture, words):
    result = hg.ingest(fixture)
    assert result["action"] == "new_ticket"
    assert words in hg.ticket(result["ticket"])["comments"][0]["text"]


def test_rfc2231_cyrillic_attachment_name_is_decoded(hg):
    result = hg.ingest("attachment_rfc2231_thunderbird.eml")
    attachments = hg.ticket(result["ticket"])["comments"][0]["attachments"]
    assert attachments == [{"id": 1, "filename": "Ошибка принтера.pdf", "size": 45,
                            "stored": True,
                            "content_type": "application/pdf"}]


def test_attachment_over_the_limit_is_not_stored_and_the_comment_says_so(hg):
    hg.configure('[mail]\nmax_attachment_size = "20B"\n')
    result = hg.ingest("attachment_rfc2231_thunderbird.eml")
    comment = hg.ticket(result["ticket"])["comments"][0]
    assert comment["attachments"][0]["stored"] is False
    assert comment["attachments"][0]["size"] == 45
    assert "«Ошибка принтера.pdf»" in comment["text"] and "не сохранено" in comment["text"]


@pytest.mark.parametrize("fixture, reason", [
    ("empty_body.eml", "empty message"),
    ("no_sender.eml", "no sender"),
    ("unparseable.eml", "unparseable"),
])
def test_unprocessable_mail_is_quarantined_never_dropped(hg, fixture, reason):
    result = hg.ingest(fixture)
    assert (result["action"], result["ticket"]) == ("quarantined", None)
    assert reason in result["reason"]
    listed = hg.json("quarantine", "list", "--json")
    assert [(q["id"], reason in q["reason"]) for q in listed] == [(result["inbound"], True)]
    assert listed[0]["size"] == hg.file(fixture).stat().st_size
    replay = hg.json("quarantine", "replay", str(result["inbound"]))
    assert replay["action"] == "quarantined" and reason in replay["reason"]
    assert hg.json("tickets", "--json") == []


def test_throttled_mail_is_quarantined_and_replays_into_a_ticket(hg):
    hg.configure("[threading]\nthrottle_max = 1\n")
    first = hg.ingest(mail(sender="flood@lyutik.ru", body="раз"))
    second = hg.ingest(mail(sender="flood@lyutik.ru", body="два"))
    assert first["action"] == "new_ticket"
    assert second["action"] == "quarantined" and second["reason"].startswith("throttled")
    replay = hg.json("quarantine", "replay", str(second["inbound"]))
    assert replay["action"] == "new_ticket"
    assert hg.json("quarantine", "list", "--json") == []
    code, _, err = hg.run("quarantine", "replay", str(second["inbound"]))
    assert code == 1 and "not quarantined" in err


def test_customer_history_by_email_and_phone(hg):
    hg.ingest("new_request_gmail_ru.eml")
    hg.ingest("marker_nonexistent.eml")
    hg.ingest("new_company_domain.eml")
    by_email = hg.json("tickets", "--json", "--email", "ivan@romashka.ru")
    by_phone = hg.json("tickets", "--json", "--phone", "+79161234567")
    assert [t["number"] for t in by_email] == [t["number"] for t in by_phone] == [2, 1]


@pytest.mark.parametrize("args, message", [
    (("ticket", "999", "--json"), "no ticket 999"),
    (("status", "1", "nonsense"), "unknown status 'nonsense'"),
    (("status", "1", "closed"), "open -> closed is not allowed"),
    (("status", "1", "pending"), "needs an until time"),
    (("status", "1", "pending", "--until", "tomorrow"), "not an ISO 8601 time"),
    (("status", "77", "resolved"), "no ticket 77"),
    (("quarantine", "replay", "5"), "no quarantined message 5"),
    (("ingest", "/nonexistent.eml"), "cannot read /nonexistent.eml"),
    (("ingest", "x.eml", "--type", "bug"), "unknown ticket type 'bug'"),
])
def test_bad_input_is_one_line_and_changes_nothing(hg, args, message):
    hg.ingest("new_request_gmail_ru.eml")
    before = (stable(hg.ticket(1)), hg.outbox())
    code, out, err = hg.run(*args)
    assert code == 1 and out == ""
    assert err.startswith("helpgate: error: ") and message in err and err.count("\n") == 1
    assert (stable(hg.ticket(1)), hg.outbox()) == before


def stable(ticket: dict) -> dict:
    """A ticket without the figures that grow with the clock."""
    return {k: v for k, v in ticket.items() if k != "resolution_seconds"}


def test_bad_config_is_one_line_naming_the_key(hg):
    hg.configure('[reopen]\ndefault = "a week"\n')
    code, out, err = hg.run("tickets", "--json")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and f"{hg.config}:2: reopen.default" in err
