"""The staff_auth rule and its Authentication-Results helper on their own (issue #15
item 9, R-GW-1, R-GW-2), with the in-memory directory: token, DKIM, DMARC, forged,
untrusted server, revoked, another ticket's token, and the parsing corner cases."""

from __future__ import annotations

import pytest

from helpgate.config.schema import Config
from helpgate.threading.authresults import dkim_aligned, proof_for, verified
from helpgate.threading.directory import ReplyToken
from helpgate.threading.markers import new_reply_token, reply_address, reply_tokens
from helpgate.threading.rules import staff_auth
from tests.threading.fakes import ANNA, IVAN, FakeDirectory, context, ticket

TOKEN = "abcdefghijklmnopqrstuvwxyz"
TRUSTING = Config(mail={"authserv_ids": ["MX.helpgate.test"]})


def employee_ctx(config: Config | None = None, headers: str = "", **fields):
    raw = (headers + "From: anna@helpgate.test\nSubject: Re: [#5]\n\nГотово.\n").encode()
    ctx = context(config, sender_email="anna@helpgate.test", raw=raw, **fields)
    ctx.decision.author, ctx.decision.ticket = ANNA, ticket(5)
    return ctx


def decided(ctx, directory=None) -> str | None:
    staff_auth.apply(ctx, directory or FakeDirectory())
    return ctx.decision.unverified_staff


def tokens(revoked: bool = False, ticket_id: int = 50, employee_id: int = ANNA.id):
    return FakeDirectory(tokens={TOKEN: ReplyToken(ticket_id, employee_id, revoked)})


def test_reply_token_authenticates_its_employee_on_its_ticket():
    ctx = employee_ctx(to=(f"support+{TOKEN}@helpgate.localhost",))
    assert decided(ctx, tokens()) is None
    assert ctx.fired == ["staff_auth"] and "reply address of ticket 5" in ctx.notes[0]


@pytest.mark.parametrize("directory, why", [
    (tokens(revoked=True), "was revoked"),
    (tokens(ticket_id=60), "another ticket or another employee"),
    (tokens(employee_id=2), "another ticket or another employee"),
    (FakeDirectory(), "unknown token"),
])
def test_a_token_that_is_not_theirs_for_this_ticket(directory, why):
    ctx = employee_ctx(to=(f"support+{TOKEN}@helpgate.localhost",))
    assert why in decided(ctx, directory)


def test_forged_from_without_any_proof():
    assert "no trusted mail server" in decided(employee_ctx(TRUSTING))


@pytest.mark.parametrize("field", [
    "mx.helpgate.test; dkim=pass header.d=helpgate.test",
    "mx.helpgate.test; dkim=pass header.i=@helpgate.test header.s=s1",
    "mx.helpgate.test 1; spf=fail smtp.mailfrom=x; dkim=pass header.d=HelpGate.Test",
    "mx.helpgate.test; dmarc=pass header.from=helpgate.test",
])
def test_trusted_results_authenticate(field):
    ctx = employee_ctx(TRUSTING, f"Authentication-Results: {field}\n")
    assert decided(ctx) is None


@pytest.mark.parametrize("fields", [
    ["mx.helpgate.test; dkim=pass header.d=helpgate.test"],  # not trusted by this config
], ids=["no authserv_ids configured"])
def test_results_count_only_with_a_configured_server(fields):
    headers = "".join(f"Authentication-Results: {f}\n" for f in fields)
    assert decided(employee_ctx(Config(), headers)) is not None


@pytest.mark.parametrize("fields", [
    ["mail.evil.example; dkim=pass header.d=helpgate.test"],
    ["mx.helpgate.test; dkim=fail header.d=helpgate.test",
     "mx.helpgate.test; dkim=pass header.d=helpgate.test"],
    ["mx.helpgate.test; dkim=pass header.d=evil.example; dmarc=fail header.from=helpgate.test"],
    ["mx.helpgate.test; dkim=pass header.d=test"],
    ["mx.helpgate.test; dmarc=pass header.from=evil.example"],
    ["dkim=pass header.d=helpgate.test"],  # no authserv-id at all
    ["mx.helpgate.test; ;; =="],
], ids=["untrusted server", "forged below ours", "misaligned", "bare TLD", "dmarc other",
        "no authserv-id", "unreadable"])
def test_results_that_prove_nothing(fields):
    headers = "".join(f"Authentication-Results: {f}\n" for f in fields)
    assert decided(employee_ctx(TRUSTING, headers)) is not None


def test_contacts_new_tickets_and_stand_ins_are_not_its_business():
    ctx = employee_ctx()
    ctx.decision.author = IVAN
    assert decided(ctx) is None and ctx.fired == []
    ctx = employee_ctx()
    ctx.decision.ticket = None
    assert decided(ctx) is None and ctx.fired == []
    ctx = employee_ctx()
    ctx.decision.stand_in_author = True
    assert decided(ctx) is None and ctx.fired == []


def test_reply_address_round_trip():
    token = new_reply_token()
    address = reply_address("support@helpgate.localhost", token)
    assert reply_tokens([address.upper()], ["support@helpgate.localhost"]) == [token]
    assert reply_tokens([f"other+{token}@helpgate.localhost", f"support+{token}x@h.test",
                         "support@helpgate.localhost"], ["support@helpgate.localhost"]) == []


def test_alignment_and_proofs():
    assert dkim_aligned("helpgate.test", "mail.helpgate.test")
    assert not dkim_aligned("mail.helpgate.test", "helpgate.test")
    assert not dkim_aligned("test", "helpgate.test")
    found = verified(["mx.a; dkim=pass header.d=x.test", "mx.b; dmarc=pass header.from=y.test",
                      "mx.a; dkim=pass header.d=z.test"], ["mx.a", "mx.b"])
    assert (found.dkim, found.dmarc, found.servers) == (
        {"x.test"}, {"y.test"}, ("mx.a", "mx.b"))
    assert proof_for(found, "z.test") is None
