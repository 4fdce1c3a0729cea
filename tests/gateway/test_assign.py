"""A ticket's assignee (issue 18 part 2): one way to assign, pass on and unassign, from
the CLI and the staff API, recorded with who and when in the ticket's assignment
history; an unknown employee is refused and changes nothing; the new assignee is told."""

from __future__ import annotations

import pytest

from helpgate.config.schema import Config
from tests.gateway.test_api import _error, make_desk
from tests.mailfactory import mail


def test_assign_from_the_cli_shows_on_the_ticket_and_filters_the_list(hg):
    first = hg.ingest(mail(subject="Принтер"))["ticket"]
    second = hg.ingest(mail(sender="olga@romashka.ru", subject="Сканер"))["ticket"]
    assert hg.ticket(first)["assignee"] is None
    done = hg.json("assign", str(first), "vera@helpgate.test", "--json")
    assert done["assignee"]["email"] == "vera@helpgate.test" and done["changed"] is True
    vera = done["assignee"]["id"]
    # By id too, and again: nothing changes the second time.
    code, out, _ = hg.run("assign", str(second), str(vera))
    assert code == 0 and out.strip() == f"#{second}: assigned to Vera Agent <vera@helpgate.test>"
    assert hg.json("assign", str(second), "vera@helpgate.test", "--json")["changed"] is False
    detail = hg.ticket(first)
    assert detail["assignee"] == {"id": vera, "email": "vera@helpgate.test",
                                  "name": "Vera Agent"}
    assert [(h["from"], h["to"]["email"], h["by"], h["reason"])
            for h in detail["assignment_history"]] == [
        (None, "vera@helpgate.test", None, "assigned by an operator (CLI)")]
    code, out, _ = hg.run("ticket", str(first))
    assert "assignee: Vera Agent <vera@helpgate.test>" in out
    assert [t["number"] for t in hg.json("tickets", "--json", "--assignee", str(vera))] == \
        [second, first]
    assert hg.json("tickets", "--json", "--assignee", "anna@helpgate.test") == []
    # Unassigned: the history keeps both.
    assert hg.json("assign", str(first), "--none", "--json")["assignee"] is None
    history = hg.ticket(first)["assignment_history"]
    assert [(h["from"] and h["from"]["email"], h["to"]) for h in history][-1] == \
        ("vera@helpgate.test", None)
    assert [t["number"] for t in hg.json("tickets", "--json", "--assignee", str(vera))] == \
        [second]


def test_the_cli_refuses_bad_assignments_and_changes_nothing(hg):
    number = hg.ingest(mail())["ticket"]
    outbox = hg.outbox()
    for args, words in [
        (("assign", str(number), "nobody@helpgate.test"), "no employee 'nobody@helpgate.test'"),
        (("assign", str(number), "999"), "no employee '999'"),
        (("assign", str(number)), "name the employee"),
        (("assign", str(number), "vera@helpgate.test", "--none"), "name the employee"),
        (("assign", "999", "vera@helpgate.test"), "no ticket 999"),
        (("tickets", "--assignee", "nobody"), "no employee 'nobody'"),
    ]:
        code, out, err = hg.run(*args)
        assert code == 1 and words in err and out == "", args
    assert hg.ticket(number)["assignee"] is None
    assert hg.ticket(number)["assignment_history"] == []
    assert hg.outbox() == outbox


@pytest.fixture
async def desk(store, clock):
    desk = await make_desk(Config(), store, clock)
    yield desk
    await desk.client.close()


async def test_assign_through_the_api(desk):
    number = await desk.ticket()
    before = await desk.outbox()
    status, body = await desk.post(f"/tickets/{number}/assign",
                                   {"employee": "anna@helpgate.test"})
    assert status == 200 and body["assignee"]["email"] == "anna@helpgate.test"
    anna = body["assignee"]["id"]
    # The list and the detail carry the assignee; the history says who assigned.
    status, page = await desk.get("/tickets")
    assert page["tickets"][0]["assignee"]["id"] == anna
    detail = await desk.detail(number)
    assert detail["assignment_history"][-1]["by"]["email"] == "vera@helpgate.test"
    assert detail["assignment_history"][-1]["reason"] == \
        "assigned by vera@helpgate.test (API)"
    # Anna is told (by mail, the default channel), with her reply address.
    told = [r for r in await desk.outbox() if r not in before]
    assert [(r["kind"], r["to"]) for r in told] == [("staff", "anna@helpgate.test")]
    assert "назначено вам" in told[0]["text"] or "assigned to you" in told[0]["text"]
    assert "+" in told[0]["headers"]["Reply-To"]
    # Vera takes it herself (by id): she is not told of her own act.
    status, body = await desk.post(f"/tickets/{number}/assign", {"employee": None})
    assert status == 200 and body["assignee"] is None
    vera = (await desk.get("/me"))[1]["id"]
    status, body = await desk.post(f"/tickets/{number}/assign", {"employee": vera})
    assert status == 200 and body["assignee"]["email"] == "vera@helpgate.test"
    assert len(await desk.outbox()) == len(before) + 1


async def test_bad_assignments_through_the_api_change_nothing(desk):
    number = await desk.ticket()
    before = await desk.outbox()
    for body, code in [({"employee": "nobody@helpgate.test"}, 422), ({"employee": 999}, 422),
                       ({"employee": 2**70}, 422), ({"employee": ""}, 400),
                       ({"employee": True}, 400), ({"employee": [1]}, 400), ({}, 400),
                       ({"employee": 1, "extra": 1}, 400)]:
        status, answer = await desk.post(f"/tickets/{number}/assign", body)
        assert status == code, body
        _error(answer, code)
    status, answer = await desk.post("/tickets/999/assign", {"employee": 1})
    assert status == 404
    status, answer = await desk.post(f"/tickets/{number}/assign", {"employee": 1},
                                     token="hgapi_nothing")
    assert status == 401
    detail = await desk.detail(number)
    assert detail["assignee"] is None and detail["assignment_history"] == []
    assert await desk.outbox() == before
