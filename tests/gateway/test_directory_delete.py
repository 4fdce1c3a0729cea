"""Deleting directory entries (issue 18 part 3) never loses history: a contact or company
with tickets, an employee who wrote comments, a company with contacts and the last
administrator are refused (409, nothing changed); an entry nothing points at goes with
what only it owned (domains, identities, an employee's tokens). The API and `helpgate
directory remove`, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from helpgate.ticketstore import api_tokens, people
from helpgate.ticketstore.models import ApiToken, Identity
from tests.gateway.test_api import _error, desk  # noqa: F401  (the fixture)
from tests.mailfactory import mail


async def ids(desk) -> dict[str, dict[str, int]]:  # noqa: F811
    status, body = await desk.get("/directory")
    assert status == 200
    # Companies by name, people by email.
    return {kind: {(e["name"] if kind == "companies" else e["email"]): e["id"]
                   for e in entries} for kind, entries in body.items()}


async def delete(desk, path: str, token: str | None = None):  # noqa: F811
    response = await desk.client.delete(path, headers=desk.auth(token))
    return response.status, await response.json()


async def test_entries_with_history_are_kept_and_others_go(desk):  # noqa: F811
    number = await desk.ticket()  # Ivan's ticket, of Romashka LLC
    status, body = await desk.post(f"/tickets/{number}/reply", {"text": "Заменили."})
    assert status == 201  # Vera wrote a comment
    await desk.store.run(people.upsert_contact, people.ContactEntry(
        email="olga@romashka.ru", telegram_id=4242), desk.clock())
    before = await ids(desk)
    contacts, companies, employees = (before["contacts"], before["companies"],
                                      before["employees"])
    # An agent's token may not; unknown ids are 404.
    status, body = await delete(desk, f"/directory/contacts/{contacts['olga@romashka.ru']}")
    assert status == 403 and "administrator" in _error(body, 403)
    for path in ("/directory/contacts/999", "/directory/companies/999",
                 "/directory/employees/999", "/directory/contacts/0"):
        status, body = await delete(desk, path, desk.other)
        assert status == 404, path
    refusals = [
        (f"/directory/contacts/{contacts['ivan@romashka.ru']}", "1 tickets, 1 comments"),
        (f"/directory/companies/{companies['Romashka LLC']}", "1 tickets, 2 contacts"),
        (f"/directory/employees/{employees['vera@helpgate.test']}", "1 comments")]
    for path, words in refusals:
        status, body = await delete(desk, path, desk.other)
        assert status == 409 and "is kept" in _error(body, 409) and words in (
            body["error"]["message"]), path
    assert await ids(desk) == before
    # Olga has no ticket: she goes, and her Telegram identity with her.
    status, body = await delete(desk, f"/directory/contacts/{contacts['olga@romashka.ru']}",
                                desk.other)
    assert status == 200 and body == {"deleted": "contact",
                                      "id": contacts["olga@romashka.ru"],
                                      "name": "Olga Smirnova", "email": "olga@romashka.ru"}
    assert await desk.store.run(lambda s: s.scalar(
        select(func.count()).select_from(Identity).where(Identity.channel == "telegram"))) == 0
    # Boris wrote nothing: he goes, and so does his API token.
    boris = employees["boris@helpgate.test"]
    token = (await desk.store.run(api_tokens.issue, "boris@helpgate.test", "x",
                                  desk.clock()))["token"]
    status, body = await delete(desk, f"/directory/employees/{boris}", desk.other)
    assert status == 200
    assert (await desk.get("/me", token=token))[0] == 401
    assert await desk.store.run(lambda s: s.scalar(select(func.count()).select_from(
        ApiToken).where(ApiToken.employee_id == boris))) == 0
    after = await ids(desk)
    assert "olga@romashka.ru" not in after["contacts"]
    assert "boris@helpgate.test" not in after["employees"]
    assert len((await desk.detail(number))["comments"]) == 2  # history whole


async def test_the_last_administrator_and_a_company_with_contacts_stay(desk):  # noqa: F811
    directory = await ids(desk)
    anna, boris = (directory["employees"]["anna@helpgate.test"],
                   directory["employees"]["boris@helpgate.test"])
    status, _ = await delete(desk, f"/directory/employees/{boris}", desk.other)
    assert status == 200
    status, body = await delete(desk, f"/directory/employees/{anna}", desk.other)
    assert status == 409 and "only administrator" in _error(body, 409)
    # A company with a contact but no ticket: kept until the contact goes.
    company = directory["companies"]["Romashka LLC"]
    for email in ("ivan@romashka.ru", "olga@romashka.ru"):
        status, _ = await delete(desk, f"/directory/contacts/"
                                       f"{directory['contacts'][email]}", desk.other)
        assert status == 200
    status, body = await delete(desk, f"/directory/companies/{company}", desk.other)
    assert status == 200 and body["name"] == "Romashka LLC"
    assert (await ids(desk))["companies"] == {}


def test_directory_remove_from_the_cli(hg):
    number = hg.ingest(mail())["ticket"]
    listed = hg.json("directory", "list", "--json")
    olga = next(c["id"] for c in listed["contacts"] if c["email"] == "olga@romashka.ru")
    ivan = next(c["id"] for c in listed["contacts"] if c["email"] == "ivan@romashka.ru")
    code, out, err = hg.run("directory", "remove", "contact", str(ivan))
    assert (code, out) == (1, "") and "is kept: it has 1 tickets" in err
    code, out, err = hg.run("directory", "remove", "contact", "0")
    assert (code, out) == (1, "") and "no contact 0" in err
    assert hg.json("directory", "remove", "contact", str(olga))["deleted"] == "contact"
    emails = [c["email"] for c in hg.json("directory", "list", "--json")["contacts"]]
    assert emails == ["ivan@romashka.ru"]
    assert hg.ticket(number)["contact"]["email"] == "ivan@romashka.ru"


async def test_an_employee_in_a_tickets_assignment_history_is_kept(desk):  # noqa: F811
    number = await desk.ticket()
    boris = (await ids(desk))["employees"]["boris@helpgate.test"]
    status, body = await desk.post(f"/tickets/{number}/assign",
                                   {"employee": "boris@helpgate.test"})
    assert status == 200 and body["assignee"]["id"] == boris
    status, body = await delete(desk, f"/directory/employees/{boris}", desk.other)
    assert status == 409 and "1 tickets assigned, 1 assignment history entries" in (
        _error(body, 409))
    # Unassigned, the history still names him: he stays, and the ticket's history whole.
    status, body = await desk.post(f"/tickets/{number}/assign", {"employee": None})
    assert status == 200 and body["assignee"] is None
    status, body = await delete(desk, f"/directory/employees/{boris}", desk.other)
    assert status == 409 and "2 assignment history entries" in _error(body, 409)
    assert "boris@helpgate.test" in (await ids(desk))["employees"]
    assert len((await desk.detail(number))["assignment_history"]) == 2
