"""`helpgate reply` and `helpgate outbox retry` (R-GW-1, R-GW-2, R-OUT-6): a public staff
comment is queued to the customer, a private one reaches no one, bad input changes nothing."""

from __future__ import annotations

from tests.mailfactory import mail


def test_a_public_reply_is_queued_to_the_customer(hg):
    number = hg.ingest(mail(subject="Принтер"))["ticket"]
    before = len(hg.outbox())
    result = hg.json("reply", str(number), "Заменили картридж.", "--as", "vera@helpgate.test")
    assert result["public"] and result["author"]["email"] == "vera@helpgate.test"
    assert result["queued"] == [{"channel": "email", "to": "ivan@romashka.ru"}]
    [relay] = hg.outbox()[before:]
    assert (relay["kind"], relay["to"], relay["ticket"]) == ("comment", "ivan@romashka.ru",
                                                             number)
    assert relay["subject"] == f"[#{number}] Принтер"
    assert "Заменили картридж." in relay["text"]
    comment = hg.ticket(number)["comments"][-1]
    assert (comment["author"]["kind"], comment["public"], comment["channel"]) == (
        "employee", True, "cli")


def test_a_private_reply_reaches_no_one(hg):
    number = hg.ingest(mail())["ticket"]
    before = hg.outbox()
    result = hg.json("reply", str(number), "--private", "Клиент звонил, ждёт до вечера.")
    assert result["queued"] == [] and not result["public"]
    assert result["author"]["email"] == "anna@helpgate.test"  # the earliest administrator
    assert hg.outbox() == before
    assert hg.ticket(number)["comments"][-1]["public"] is False


def test_bad_replies_are_refused_and_change_nothing(hg):
    number = hg.ingest(mail())["ticket"]
    comments = len(hg.ticket(number)["comments"])
    for args, message in [(("999", "текст"), "no ticket 999"),
                          ((str(number), "   "), "the reply text is empty"),
                          ((str(number), "текст", "--as", "nobody@x.ru"),
                           "no employee with email nobody@x.ru")]:
        code, out, err = hg.run("reply", *args)
        assert (code, out) == (1, "")
        assert err.strip() == f"helpgate: error: {message}"
    assert len(hg.ticket(number)["comments"]) == comments


def test_outbox_retry_refuses_a_queued_message(hg):
    hg.ingest(mail())
    code, _, err = hg.run("outbox", "retry", "1")
    assert code == 1 and "only parked or uncertain messages are sent again" in err
