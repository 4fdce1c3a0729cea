"""Who may speak as staff (issue #15 item 9; R-GW-1, R-GW-2), through `helpgate ingest`:
an employee's mail on a ticket is relayed to the customer only when it came through the
employee's reply address for that ticket (a token in the plus-tag of Reply-To) or a
trusted receiving server reports DKIM or DMARC passing for the employee's domain.
Anything else (a forged From, someone else's Authentication-Results, a revoked address)
is kept as an unverified private note, reaches no customer, and the employee is told."""

from __future__ import annotations

import re

import pytest

from tests.gateway.cli_helpers import template

REPLY = "employee_reply_thunderbird.eml"
TRUSTING = '[mail]\nauthserv_ids = ["mx.helpgate.test"]\n'


def employee_mail(to: str = "Support <support@helpgate.localhost>", *headers: str,
                  message: int = 1) -> bytes:
    """Anna's answer to ticket 1 from her mail client, with header fields on top the way
    a receiving server adds them."""
    raw = template(REPLY).replace(b"To: Support <support@helpgate.localhost>",
                                  f"To: {to}".encode())
    raw = raw.replace(b"anna00000001", f"anna{message:08d}".encode())
    return b"".join(f"{h}\n".encode() for h in headers) + raw


def reply_to_of(hg, employee: str) -> str:
    [row] = [r for r in hg.outbox() if r["kind"] == "staff" and r["to"] == employee][:1]
    return row["headers"]["Reply-To"]


def outcome(hg, result: dict) -> tuple[dict, list[tuple[str, str]]]:
    comment = [c for c in hg.ticket(1)["comments"] if c["id"] == result["comment"]][0]
    queued = [(r["kind"], r["to"]) for r in hg.outbox() if r["comment"] == result["comment"]]
    return comment, queued


def assert_relayed(hg, result: dict) -> None:
    comment, queued = outcome(hg, result)
    assert (comment["public"], comment["unverified"]) == (True, None)
    assert queued == [("comment", "ivan@romashka.ru")]
    assert "staff_auth" in result["rules"]


def assert_kept_private(hg, result: dict, why: str) -> dict:
    comment, queued = outcome(hg, result)
    assert comment["public"] is False and why in comment["unverified"]
    assert comment["author"]["email"] == "anna@helpgate.test"
    assert queued == [("unverified", "anna@helpgate.test")]  # no customer, no colleague
    assert hg.ticket(1)["first_response_seconds"] is None
    return [r for r in hg.outbox() if r["comment"] == result["comment"]][0]


@pytest.fixture
def desk(hg):
    hg.ingest("new_request_gmail_ru.eml")
    return hg


def test_staff_notifications_reply_to_a_token_address_per_employee(desk):
    anna, vera = reply_to_of(desk, "anna@helpgate.test"), reply_to_of(desk, "vera@helpgate.test")
    assert re.fullmatch(r"support\+[a-z2-7]{26}@helpgate\.localhost", anna)
    assert anna != vera
    ack = [r for r in desk.outbox() if r["kind"] == "ack"][0]
    assert "Reply-To" not in ack["headers"]  # the customer's replies go to the plain address


def test_reply_through_the_token_address_reaches_the_customer(desk):
    result = desk.ingest(employee_mail(reply_to_of(desk, "anna@helpgate.test")))
    assert_relayed(desk, result)
    assert desk.ticket(1)["first_response_seconds"] is not None


def test_token_in_cc_or_delivered_to_counts_too(desk):
    token = reply_to_of(desk, "anna@helpgate.test")
    assert_relayed(desk, desk.ingest(employee_mail(
        "support@helpgate.localhost", f"Cc: {token}", message=1)))
    assert_relayed(desk, desk.ingest(employee_mail(
        "support@helpgate.localhost", f"Delivered-To: {token}", message=2)))


def test_dkim_pass_aligned_with_the_employee_domain(desk):
    desk.configure(TRUSTING)
    result = desk.ingest(employee_mail(
        "support@helpgate.localhost",
        "Authentication-Results: mx.helpgate.test; dkim=pass header.d=helpgate.test "
        "header.s=mail; spf=pass smtp.mailfrom=helpgate.test"))
    assert_relayed(desk, result)
    assert "authenticated by DKIM pass d=helpgate.test (mx.helpgate.test)" in result["reason"]


def test_dmarc_pass_for_the_employee_domain(desk):
    desk.configure(TRUSTING)
    assert_relayed(desk, desk.ingest(employee_mail(
        "support@helpgate.localhost",
        "Authentication-Results: MX.helpgate.test;\n\tdmarc=pass (p=reject) "
        "header.from=helpgate.test")))


def test_forged_from_is_kept_private_and_the_real_employee_is_told(desk):
    forged = employee_mail("support@helpgate.localhost", "Reply-To: attacker@evil.example")
    result = desk.ingest(forged)
    notice = assert_kept_private(desk, result, "did not come through your reply address")
    assert notice["to"] == "anna@helpgate.test"
    assert "закончился" in notice["text"]  # she sees what was sent in her name
    assert re.fullmatch(r"support\+[a-z2-7]{26}@helpgate\.localhost",
                        notice["headers"]["Reply-To"])
    text = desk.run("ticket", "1")[1]
    assert "(private, email)" in text and "[unverified, relayed to no one: it did not" in text


def test_results_of_an_untrusted_server_prove_nothing(desk):
    desk.configure(TRUSTING)
    result = desk.ingest(employee_mail(
        "support@helpgate.localhost",
        "Authentication-Results: mail.evil.example; dkim=pass header.d=helpgate.test; "
        "dmarc=pass header.from=helpgate.test"))
    assert_kept_private(desk, result, "no trusted mail server")


def test_only_the_topmost_result_of_a_trusted_server_counts(desk):
    """The sender can write a field with our server's id further down; ours is on top."""
    desk.configure(TRUSTING)
    result = desk.ingest(employee_mail(
        "support@helpgate.localhost",
        "Authentication-Results: mx.helpgate.test; dkim=fail header.d=helpgate.test; "
        "dmarc=fail header.from=helpgate.test",
        "Received: from evil.example by mx.helpgate.test; Mon, 23 Nov 2026 10:40:01 +0300",
        "Authentication-Results: mx.helpgate.test; dkim=pass header.d=helpgate.test"))
    assert_kept_private(desk, result, "no trusted mail server")


def test_dkim_of_another_domain_is_not_aligned(desk):
    desk.configure(TRUSTING)
    result = desk.ingest(employee_mail(
        "support@helpgate.localhost",
        "Authentication-Results: mx.helpgate.test; dkim=pass header.d=evil.example"))
    assert_kept_private(desk, result, "no trusted mail server")


def test_a_revoked_reply_address_no_longer_authenticates(desk):
    address = reply_to_of(desk, "anna@helpgate.test")
    assert desk.json("staff", "revoke", "Anna@helpgate.test") == {
        "employee": "anna@helpgate.test", "ticket": None, "revoked": 1}
    result = desk.ingest(employee_mail(address))
    assert_kept_private(desk, result, "was revoked")
    # Her next notification carries a fresh address; Vera's still works.
    fresh = [r for r in desk.outbox() if r["kind"] == "unverified"][0]["headers"]["Reply-To"]
    assert fresh != address
    assert_relayed(desk, desk.ingest(employee_mail(fresh, message=2)))


def test_another_employees_or_tickets_address_does_not_authenticate(desk):
    vera = reply_to_of(desk, "vera@helpgate.test")
    result = desk.ingest(employee_mail(vera))
    assert_kept_private(desk, result, "another ticket or another employee")


def test_revoke_bad_input_is_one_line_and_changes_nothing(desk):
    code, out, err = desk.run("staff", "revoke", "nobody@helpgate.test")
    assert (code, out) == (1, "")
    assert err.strip() == "helpgate: error: no employee with email nobody@helpgate.test"
    code, _, err = desk.run("staff", "revoke", "anna@helpgate.test", "--ticket", "99")
    assert (code, err.strip()) == (1, "helpgate: error: no ticket 99")
    assert_relayed(desk, desk.ingest(employee_mail(reply_to_of(desk, "anna@helpgate.test"))))


OLD_RULES = ('[threading]\nrules = ["own_address", "bounce", "auto_reply", "throttle", '
             '"subject_marker", "references", "sender_identity", "company_domain", '
             '"unknown_sender", "quote_strip", "waiting_for_customer", "reopen_policy"]\n')


def test_a_rule_list_written_before_staff_auth_still_checks_staff(desk):
    """Configs list their rules; one written before the rule existed must not let a
    forged From through as staff's answer."""
    desk.configure(OLD_RULES)
    result = desk.ingest(employee_mail("support@helpgate.localhost"))
    assert_kept_private(desk, result, "did not come through your reply address")


def test_staff_auth_before_the_rules_that_find_the_author_is_refused(desk):
    desk.configure('[threading]\nrules = ["staff_auth", "subject_marker", "sender_identity"]\n')
    code, out, err = desk.run("tickets")
    assert code == 1 and "staff_auth must come after subject_marker, sender_identity" in err


def test_imported_history_keeps_its_staff_answers_public(hg, tmp_path):
    """An admin's `helpgate import` of the old mailbox: the employees' answers in it were
    staff's then and stay so, though they carry no token of ours."""
    import mailbox
    box = mailbox.mbox(str(tmp_path / "history.mbox"))
    box.add(template("new_request_gmail_ru.eml"))
    box.add(employee_mail("support@helpgate.localhost"))
    box.flush()
    box.close()
    code, out, err = hg.run("import", "mbox", str(tmp_path / "history.mbox"), "--no-progress")
    assert code == 0, err
    comments = hg.ticket(1)["comments"]
    assert [(c["author"]["email"], c["public"], c["unverified"]) for c in comments] == [
        ("ivan@romashka.ru", True, None), ("anna@helpgate.test", True, None)]
