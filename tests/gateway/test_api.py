"""The staff HTTP API (issue 18 part 3): tokens hashed and revocable, every endpoint with
its auth failures and bad input (JSON errors, nothing changed), the per-token rate limit,
the OpenAPI document matching the routes served, and the same read models and reply path
as the CLI. Runs on SQLite and PostgreSQL, the server on a free loopback port."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.api import Api
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import api_tokens, people
from helpgate.ticketstore.models import ApiToken, InboundMessage
from helpgate.ticketstore.queries import outbox_list, ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.conftest import DATA
from tests.gateway.cli_helpers import DIRECTORY
from tests.mailfactory import mail


class Desk:
    """A help desk with the sample directory, its API served, and two employees' tokens."""

    def __init__(self, config: Config, store, clock, client: TestClient, api: Api) -> None:
        self.config, self.store, self.clock, self.client, self.api = (
            config, store, clock, client, api)
        self.pipeline = Pipeline(config, store, clock=clock)
        self.token = ""
        self.other = ""
        self.woken = 0

    async def ticket(self, sender: str = "ivan@romashka.ru", subject: str = "Принтер") -> int:
        result = await self.pipeline.ingest_email(mail(sender=sender, subject=subject))
        return result.ticket

    def auth(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def get(self, path: str, token: str | None = None, **params):
        response = await self.client.get(path, headers=self.auth(token), params=params)
        return response.status, await _body(response)

    async def post(self, path: str, body=None, token: str | None = None, **kwargs):
        response = await self.client.post(path, headers=self.auth(token), json=body,
                                          **kwargs)
        return response.status, await _body(response)

    async def detail(self, number: int) -> dict:
        def read(session):
            return ticket_detail(session, self.config, ticket_by_number(session, number),
                                 self.clock())
        return await self.store.run(read)

    async def outbox(self) -> list[dict]:
        return await self.store.run(outbox_list)


async def _body(response):
    if response.content_type == "application/json":
        return await response.json()
    return await response.read()


async def make_desk(config, store, clock):
    now = clock()
    await store.run(people.import_directory, people.DirectoryFile.model_validate(DIRECTORY),
                    now)
    holder: dict = {}
    api = Api(config, store, clock, on_commit=lambda: holder.__setitem__(
        "woken", holder.get("woken", 0) + 1), channels=lambda: {"inbound": [],
                                                                "outbound": ["email"]})
    client = TestClient(TestServer(api.app()))
    await client.start_server()
    desk = Desk(config, store, clock, client, api)
    desk.holder = holder
    desk.token = (await store.run(api_tokens.issue, "vera@helpgate.test", "ui", now))["token"]
    desk.other = (await store.run(api_tokens.issue, "anna@helpgate.test", "script", now)
                  )["token"]
    return desk


@pytest.fixture
async def desk(config, store, clock):
    desk = await make_desk(config, store, clock)
    yield desk
    await desk.client.close()


def _error(body: dict, status: int) -> str:
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert body["error"]["message"]
    return body["error"]["message"]


# ---------------------------------------------------------------------------- tokens
async def test_tokens_are_kept_hashed_and_a_revoked_one_is_refused(desk):
    rows = await desk.store.run(lambda s: s.scalars(select(ApiToken)).all())
    assert [r.token_hash for r in rows] == [hashlib.sha256(t.encode()).hexdigest()
                                            for t in (desk.token, desk.other)]
    assert all(desk.token not in (r.token_hash, r.prefix, r.name) for r in rows)
    assert rows[0].prefix == desk.token[:len(rows[0].prefix)]
    status, me = await desk.get("/me")
    assert status == 200 and me["email"] == "vera@helpgate.test"
    listed = await desk.store.run(api_tokens.token_list)
    assert [(t["employee"], t["active"]) for t in listed] == [
        ("vera@helpgate.test", True), ("anna@helpgate.test", True)]
    assert "token" not in listed[0] and listed[0]["last_used_at"] is not None
    await desk.store.run(api_tokens.revoke, rows[0].id, desk.clock())
    status, body = await desk.get("/me")
    assert status == 401 and "not valid" in _error(body, 401)
    status, me = await desk.get("/me", token=desk.other)
    assert status == 200 and me["email"] == "anna@helpgate.test"


async def test_requests_without_a_valid_token_are_refused(desk):
    for headers in ({}, {"Authorization": "Basic dmVyYTp4"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer hgapi_wrong"},
                    {"Authorization": f"Bearer {desk.token}x"}):
        for method, path in (("GET", "/tickets"), ("GET", "/tickets/1"),
                             ("POST", "/tickets/1/reply"), ("POST", "/tickets/1/status"),
                             ("GET", "/customers/history"), ("GET", "/outbox")):
            response = await desk.client.request(method, path, headers=headers,
                                                 json={"text": "x"})
            assert response.status == 401, (headers, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            _error(await response.json(), 401)


async def test_issuing_a_token_needs_an_employee_and_a_name(desk):
    with pytest.raises(api_tokens.ApiTokenError, match="no employee"):
        await desk.store.run(api_tokens.issue, "ivan@romashka.ru", "x", desk.clock())
    with pytest.raises(api_tokens.ApiTokenError, match="needs a name"):
        await desk.store.run(api_tokens.issue, "vera@helpgate.test", "  ", desk.clock())
    with pytest.raises(api_tokens.ApiTokenError, match="no API token 99"):
        await desk.store.run(api_tokens.revoke, 99, desk.clock())


async def test_the_rate_limit_applies_per_token(store, clock):
    config = Config.model_validate({"api": {"rate_limit": 3}})
    desk = await make_desk(config, store, clock)
    try:
        assert [(await desk.get("/me"))[0] for _ in range(3)] == [200, 200, 200]
        response = await desk.client.get("/me", headers=desk.auth())
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert "rate limit" in _error(await response.json(), 429)
        assert (await desk.get("/me", token=desk.other))[0] == 200
    finally:
        await desk.client.close()


# ---------------------------------------------------------------- errors and document
async def test_unknown_routes_methods_and_bodies_answer_json(desk):
    status, body = await desk.get("/nothing")
    assert status == 404 and "no such endpoint" in _error(body, 404)
    response = await desk.client.delete("/tickets", headers=desk.auth())
    assert response.status == 405
    _error(await response.json(), 405)
    number = await desk.ticket()
    big = b'{"text": "' + b"x" * desk.config.api.max_body_size + b'"}'
    response = await desk.client.post(f"/tickets/{number}/note", data=io.BytesIO(big),
                                      headers={**desk.auth(),
                                               "Content-Type": "application/json"})
    assert response.status == 413
    _error(await response.json(), 413)
    assert len((await desk.detail(number))["comments"]) == 1


async def test_health_and_the_document_need_no_token(desk):
    await desk.ticket()
    response = await desk.client.get("/health")
    body = await response.json()
    assert response.status == 200 and body["status"] == "ok"
    assert body["database"] == {"ok": True}
    assert body["channels"] == {"inbound": [], "outbound": ["email"]}
    # The acknowledgement to the customer waits: there is no worker in this test.
    assert body["outbox"]["waiting"] == body["outbox"]["by_state"]["queued"] >= 1
    assert body["outbox"]["oldest_waiting_seconds"] >= 0
    response = await desk.client.get("/openapi.json")
    document = await response.json()
    assert response.status == 200 and document["openapi"].startswith("3.")


async def test_the_document_names_every_route_served_and_nothing_else(desk):
    document = (await (await desk.client.get("/openapi.json")).json())
    served = {(r.method.lower(), r.resource.canonical)
              for r in desk.client.server.app.router.routes() if r.method != "HEAD"}
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item}
    assert served == documented
    for path, item in document["paths"].items():
        for operation in item.values():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert "401" in operation["responses"] or operation.get("security") == []
    status_body = document["paths"]["/tickets/{number}/status"]["post"]["requestBody"]
    schema = status_body["content"]["application/json"]["schema"]
    assert schema["properties"]["status"]["enum"] == [s.id for s in desk.config.statuses.states]


# ----------------------------------------------------------------------------- tickets
async def test_the_ticket_list_filters_and_pages_with_a_cursor(desk):
    numbers = [await desk.ticket(subject=f"Вопрос {i}") for i in range(3)]
    numbers.append(await desk.ticket(sender="olga@romashka.ru"))
    numbers.append(await desk.ticket(sender="someone@elsewhere.example"))
    await desk.post(f"/tickets/{numbers[0]}/status",
                    {"status": "pending", "until": (desk.clock() + timedelta(days=1))
                     .isoformat()})
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page = await desk.get("/tickets", **params)
        assert status == 200 and len(page["tickets"]) <= 2
        seen += [t["number"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(numbers, reverse=True)
    status, page = await desk.get("/tickets")
    assert [t["number"] for t in page["tickets"]] == seen and page["next_cursor"] is None
    assert page["tickets"][0]["contact"]["email"] == "someone@elsewhere.example"

    async def numbers_of(**params):
        status, page = await desk.get("/tickets", **params)
        assert status == 200
        return [t["number"] for t in page["tickets"]]

    assert await numbers_of(status="pending") == [numbers[0]]
    assert await numbers_of(contact="OLGA@romashka.ru") == [numbers[3]]
    assert await numbers_of(company="romashka llc") == sorted(numbers[:4], reverse=True)
    assert await numbers_of(company="Romashka LLC", status="open") == [
        numbers[3], numbers[2], numbers[1]]
    assert await numbers_of(contact="nobody@x.ru") == []


async def test_the_ticket_list_refuses_bad_input(desk):
    await desk.ticket()
    for params, words in [({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"),
                          ({"limit": "ten"}, "limit"), ({"status": "lost"}, "not one of"),
                          ({"cursor": "abc"}, "digits"), ({"colour": "red"}, "unknown"),
                          ({"cursor": "9" * 30}, "cursor")]:
        status, body = await desk.get("/tickets", **params)
        assert status == 400, params
        assert words in _error(body, 400), params
    response = await desk.client.get("/tickets?status=open&status=closed",
                                     headers=desk.auth())
    assert response.status == 400


async def test_a_ticket_detail_is_the_cli_shape(desk):
    number = await desk.ticket()
    status, body = await desk.get(f"/tickets/{number}")
    assert status == 200
    assert body == await desk.detail(number)
    assert body["comments"][0]["text"].startswith("Здравствуйте")
    for path in ("/tickets/999", "/tickets/0", "/tickets/abc", f"/tickets/{'9' * 25}"):
        status, body = await desk.get(path)
        assert status == 404, path
        _error(body, 404)


# ------------------------------------------------------------------------------ changes
async def test_a_reply_goes_the_cli_way_and_wakes_the_outbox(desk):
    number = await desk.ticket()
    before = await desk.outbox()
    status, body = await desk.post(f"/tickets/{number}/reply", {"text": "Заменили картридж."})
    assert status == 201
    assert body["author"] == {"kind": "employee", "email": "vera@helpgate.test"}
    assert body["queued"] == [{"channel": "email", "to": "ivan@romashka.ru"}]
    assert body["public"] is True and body["status"] == "open"
    [relay] = (await desk.outbox())[len(before):]
    assert (relay["kind"], relay["to"], relay["ticket"]) == ("comment", "ivan@romashka.ru",
                                                             number)
    comment = (await desk.detail(number))["comments"][-1]
    assert (comment["author"]["email"], comment["public"], comment["channel"],
            comment["text"]) == ("vera@helpgate.test", True, "api", "Заменили картридж.")
    assert desk.holder["woken"] == 1


async def test_send_and_resolve_is_one_step(desk):
    number = await desk.ticket()
    status, body = await desk.post(f"/tickets/{number}/reply",
                                   {"text": "Готово.", "resolve": True, "via": "email"})
    assert status == 201 and body["status"] == "resolved"
    detail = await desk.detail(number)
    assert detail["status"] == "resolved" and detail["comments"][-1]["text"] == "Готово."
    assert [h["to"] for h in detail["status_history"]][-1] == "resolved"
    kinds = [row["kind"] for row in await desk.outbox() if row["ticket"] == number]
    assert "comment" in kinds and "status" in kinds  # the status change notified too
    # Already resolved: the answer goes, the status stays (resolved, not on to closed).
    status, body = await desk.post(f"/tickets/{number}/reply",
                                   {"text": "Ещё раз.", "resolve": True})
    assert status == 201 and body["status"] == "resolved"
    again = await desk.detail(number)
    assert again["status_history"] == detail["status_history"]
    assert again["comments"][-1]["text"] == "Ещё раз."


async def test_send_and_resolve_refused_where_the_model_has_no_way_changes_nothing(
        store, clock):
    # A model where an open ticket can only wait: "send and resolve" has nowhere to go.
    states = [{"id": "open", "next": ["pending"]},
              {"id": "pending", "next": ["open"], "needs_until": True,
               "after_until": "open"},
              {"id": "closed", "closed": True}]
    config = Config.model_validate({"statuses": {"states": states},
                                    "notifications": {"status_changes": []}})
    desk = await make_desk(config, store, clock)
    try:
        number = await desk.ticket()
        before = await desk.outbox()
        status, body = await desk.post(f"/tickets/{number}/reply",
                                       {"text": "Готово.", "resolve": True})
        assert status == 409 and "cannot be resolved from open" in _error(body, 409)
        assert len((await desk.detail(number))["comments"]) == 1
        assert await desk.outbox() == before
    finally:
        await desk.client.close()


async def test_bad_replies_and_notes_change_nothing(desk):
    number = await desk.ticket()
    comments = len((await desk.detail(number))["comments"])
    outbox = await desk.outbox()
    for path in (f"/tickets/{number}/reply", f"/tickets/{number}/note"):
        for body, words in [({}, "text is required"), ({"text": ""}, "empty"),
                            ({"text": "   "}, "empty"), ({"text": 5}, "string"),
                            ({"text": "x", "colour": 1}, "unknown field"), ([], "object"),
                            ("text", "object"), (None, "a JSON body is required")]:
            status, answer = await desk.post(path, body)
            assert status == 400, (path, body)
            assert words in _error(answer, 400), (path, body)
        response = await desk.client.post(path, data=b"{not json",
                                          headers={**desk.auth(),
                                                   "Content-Type": "application/json"})
        assert response.status == 400
        assert "not valid JSON" in _error(await response.json(), 400)
    for body in ({"text": "x", "via": "pigeon"}, {"text": "x", "resolve": "yes"}):
        status, answer = await desk.post(f"/tickets/{number}/reply", body)
        assert status == 400
        _error(answer, 400)
    status, answer = await desk.post("/tickets/999/reply", {"text": "x"})
    assert status == 404 and _error(answer, 404) == "no ticket 999"
    assert len((await desk.detail(number))["comments"]) == comments
    assert await desk.outbox() == outbox
    assert "woken" not in desk.holder


async def test_a_note_is_private_and_reaches_no_one(desk):
    number = await desk.ticket()
    outbox = await desk.outbox()
    status, body = await desk.post(f"/tickets/{number}/note", {"text": "Звонил, ждёт."})
    assert status == 201 and body["public"] is False and body["queued"] == []
    comment = (await desk.detail(number))["comments"][-1]
    assert (comment["public"], comment["text"]) == (False, "Звонил, ждёт.")
    assert await desk.outbox() == outbox


async def test_a_status_change_goes_through_the_status_service(desk):
    number = await desk.ticket()
    status, body = await desk.post(f"/tickets/{number}/status", {"status": "pending"})
    assert status == 422 and "needs an until time (until)" in _error(body, 422)
    for until, code in (("tomorrow", 400), ("2026-11-24T10:00:00", 400),
                        ("2020-01-01T00:00:00Z", 422)):
        status, body = await desk.post(f"/tickets/{number}/status",
                                       {"status": "pending", "until": until})
        assert status == code, until
        _error(body, code)
    status, body = await desk.post(f"/tickets/{number}/status",
                                   {"status": "resolved", "until": "2030-01-01T00:00:00Z"})
    assert status == 422 and "takes no until" in _error(body, 422)
    for body in ({"status": "lost"}, {"status": "open", "extra": 1}, {"status": 1}):
        status, answer = await desk.post(f"/tickets/{number}/status", body)
        assert status == 400, body
    status, answer = await desk.post(f"/tickets/{number}/status", {"status": "open"})
    assert status == 409 and "already open" in _error(answer, 409)
    status, answer = await desk.post(f"/tickets/{number}/status", {"status": "closed"})
    assert status == 409 and "not allowed" in _error(answer, 409)
    assert [h["to"] for h in (await desk.detail(number))["status_history"]] == ["open"]
    until = desk.clock() + timedelta(days=2)
    status, body = await desk.post(f"/tickets/{number}/status",
                                   {"status": "pending", "until": until.isoformat()})
    assert status == 200 and body["status"] == "pending"
    detail = await desk.detail(number)
    assert detail["pending_until"] == until.isoformat()
    assert detail["status_history"][-1]["reason"] == "changed by vera@helpgate.test (API)"
    status, body = await desk.post(f"/tickets/{number}/status", {"status": "resolved"})
    assert status == 200
    assert [r["kind"] for r in await desk.outbox() if r["ticket"] == number][-1] == "status"
    status, body = await desk.post("/tickets/999/status", {"status": "resolved"})
    assert status == 404


async def test_a_customers_history_across_channels(desk):
    first = await desk.ticket()
    second = await desk.ticket(sender="olga@romashka.ru")
    status, body = await desk.get("/customers/history", email="IVAN@romashka.ru")
    assert status == 200 and [t["number"] for t in body["tickets"]] == [first]
    # The contact's phone in another form (8 instead of +7, punctuation).
    status, body = await desk.get("/customers/history", phone="8 (916) 123-45-67")
    assert status == 200 and [t["number"] for t in body["tickets"]] == [first]
    status, body = await desk.get("/customers/history", email="nobody@x.ru")
    assert status == 200 and body["tickets"] == []
    for params in ({}, {"email": " "}, {"name": "Ivan"}):
        status, body = await desk.get("/customers/history", **params)
        assert status == 400, params
        _error(body, 400)
    assert second != first


# ---------------------------------------------------------------- outbox, quarantine, …
async def test_outbox_view_and_retry(desk):
    await desk.ticket()
    status, body = await desk.get("/outbox")
    assert status == 200 and body["messages"] == await desk.outbox()
    first = body["messages"][0]["id"]
    status, body = await desk.post(f"/outbox/{first}/retry")
    assert status == 409 and "only parked or uncertain" in _error(body, 409)
    status, body = await desk.post("/outbox/999/retry")
    assert status == 404


async def test_quarantine_view_and_drop(desk):
    result = await desk.pipeline.ingest_email((DATA / "no_sender.eml").read_bytes())
    status, body = await desk.get("/quarantine")
    assert status == 200
    quarantined = [m["id"] for m in body["messages"]]
    assert quarantined == [result.inbound]
    for body_, code in (({}, 400), ({"reason": " "}, 400)):
        status, answer = await desk.post("/quarantine/1/drop", body_)
        assert status == code
    status, answer = await desk.post("/quarantine/999/drop", {"reason": "spam"})
    assert status == 404
    status, answer = await desk.post(f"/quarantine/{result.inbound}/replay")
    # Still without a sender: decided the same way again, and still in quarantine.
    assert status == 200 and answer["inbound"] == result.inbound
    assert answer["action"] == result.action
    status, answer = await desk.post("/quarantine/999/replay")
    assert status == 404 and "no quarantined message 999" in _error(answer, 404)
    status, answer = await desk.post(f"/quarantine/{result.inbound}/drop",
                                     {"reason": "not a mail"})
    assert status == 200 and answer["state"] == "dropped"
    state = await desk.store.run(lambda s: s.get(InboundMessage, result.inbound).state)
    assert state == "dropped"
    assert (await desk.get("/quarantine"))[1]["messages"] == []
    status, answer = await desk.post(f"/quarantine/{result.inbound}/drop", {"reason": "x"})
    assert status == 409 and "not quarantined" in _error(answer, 409)
    status, answer = await desk.post(f"/quarantine/{result.inbound}/replay")
    assert status == 409 and "not quarantined" in _error(answer, 409)


async def test_directory_changes_need_an_admin_and_good_input(desk):
    contact = {"name": "Пётр", "email": "Petr@Romashka.ru", "company": "Romashka LLC"}
    status, body = await desk.post("/directory/contacts", contact)  # Vera is an agent
    assert status == 403 and "administrator" in _error(body, 403)
    before = (await desk.get("/directory"))[1]
    for path, entry, words in [
            ("/directory/contacts", {**contact, "company": "Nowhere"}, "Nowhere"),
            ("/directory/contacts", {**contact, "email": "not-an-address"}, "email"),
            ("/directory/companies", {"domains": ["x.ru"]}, "name is required"),
            ("/directory/companies", {"name": "X", "domains": "x.ru"}, "must be a list"),
            ("/directory/employees", {"name": "Gleb", "role": "boss"}, "not one of"),
            ("/directory/employees", {"name": " "}, "must not be empty")]:
        status, body = await desk.post(path, entry, token=desk.other)
        assert status == 400, entry
        assert words in _error(body, 400), entry
    assert (await desk.get("/directory"))[1] == before
    status, body = await desk.post("/directory/contacts", contact, token=desk.other)
    assert status == 201 and body == {"added": "contact", "name": "Пётр",
                                       "email": "petr@romashka.ru"}
    status, body = await desk.post("/directory/companies",
                                   {"name": "Лютик", "domains": ["lutik.ru"]},
                                   token=desk.other)
    assert status == 201
    status, body = await desk.post("/directory/employees",
                                   {"name": "Gleb", "email": "gleb@helpgate.test"},
                                   token=desk.other)
    assert status == 201
    after = {kind: [{k: v for k, v in e.items() if k != "id"} for e in entries]
             for kind, entries in (await desk.get("/directory"))[1].items()}
    assert {"name": "Пётр", "email": "petr@romashka.ru", "phone": None,
            "company": "Romashka LLC"} in after["contacts"]
    assert ["lutik.ru"] in [c["domains"] for c in after["companies"]]
    assert {"name": "Gleb", "email": "gleb@helpgate.test", "phone": None,
            "role": "agent"} in after["employees"]


async def test_directory_and_attachments(desk):
    status, body = await desk.get("/directory")
    assert status == 200
    assert [e["email"] for e in body["employees"]] == [
        "anna@helpgate.test", "boris@helpgate.test", "vera@helpgate.test"]
    status, body = await desk.get("/attachments/1")
    assert status == 404 and _error(body, 404) == "no attachment 1"
    result = await desk.pipeline.ingest_email(
        (DATA / "attachment_rfc2231_thunderbird.eml").read_bytes())
    [attachment] = [a for c in (await desk.detail(result.ticket))["comments"]
                    for a in c["attachments"]]
    response = await desk.client.get(f"/attachments/{attachment['id']}",
                                     headers=desk.auth())
    assert response.status == 200
    data = await response.read()
    assert len(data) == attachment["size"]
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    response = await desk.client.get(f"/attachments/{attachment['id']}")
    assert response.status == 401


# ------------------------------------------------------------------------ CLI and run
def test_api_tokens_from_the_cli(hg):
    issued = hg.json("api-token", "issue", "vera@helpgate.test", "--name", "help-desk UI")
    assert issued["token"].startswith("hgapi_") and issued["employee"] == "vera@helpgate.test"
    listed = hg.json("api-token", "list", "--json")
    assert [(t["id"], t["name"], t["active"]) for t in listed] == [
        (issued["id"], "help-desk UI", True)]
    assert issued["token"] not in hg.run("api-token", "list")[1]
    assert "token" not in listed[0]
    revoked = hg.json("api-token", "revoke", str(issued["id"]))
    assert revoked["active"] is False and revoked["revoked_at"]
    for args, message in [(("issue", "nobody@x.ru", "--name", "x"), "no employee"),
                          (("revoke", "42"), "no API token 42"),
                          (("revoke", "0"), "no API token 0")]:
        code, out, err = hg.run("api-token", *args)
        assert code == 1 and out == "" and message in err
    assert len(hg.json("api-token", "list", "--json")) == 1


async def test_helpgate_run_serves_the_api_when_enabled(sqlite_store, clock):
    import asyncio

    from helpgate.gateway.run import Gateway
    config = Config.model_validate({"api": {"enabled": True, "port": 0},
                                    "mail": {"endpoint": {"enabled": False}}})
    gateway = Gateway(config, sqlite_store, timer_interval=60)
    task = asyncio.create_task(gateway.serve())
    try:
        for _ in range(200):
            if gateway.api.port:
                break
            await asyncio.sleep(0.02)
        import aiohttp
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{gateway.api.port}/health") as response:
            body = await response.json()
        assert response.status == 200 and body["database"] == {"ok": True}
        assert body["channels"] == {"inbound": [], "outbound": []}
        assert f"staff API: http://127.0.0.1:{gateway.api.port}" in gateway.banner()
    finally:
        gateway.stop.set()
        await task
    assert Gateway(Config(), sqlite_store).api is None  # off by default


async def test_canned_answers_and_a_reply_with_one(desk):
    status, body = await desk.post("/canned", {"title": "Картридж",
                                               "text": "Заменили картридж."})
    assert status == 201 and body["title"] == "Картридж"
    canned = body["id"]
    status, body = await desk.post("/canned", {"title": " Картридж ", "text": "другое"})
    assert status == 409 and "exists" in _error(body, 409)
    for entry in ({"title": "x"}, {"title": " ", "text": "x"}, {"title": "x", "text": ""},
                  {"title": "x", "text": "y", "tags": []}):
        status, body = await desk.post("/canned", entry)
        assert status == 400, entry
    response = await desk.client.put(f"/canned/{canned}", headers=desk.auth(),
                                     json={"text": "Заменили картридж, проверьте печать."})
    assert response.status == 200
    assert (await response.json())["text"] == "Заменили картридж, проверьте печать."
    response = await desk.client.put("/canned/99", headers=desk.auth(), json={"text": "x"})
    assert response.status == 404
    number = await desk.ticket()
    status, body = await desk.post(f"/tickets/{number}/reply", {"canned": 99})
    assert status == 400 and "no canned answer 99" in _error(body, 400)
    assert len((await desk.detail(number))["comments"]) == 1
    status, body = await desk.post(f"/tickets/{number}/reply",
                                   {"canned": canned, "text": "С уважением, Вера."})
    assert status == 201
    assert (await desk.detail(number))["comments"][-1]["text"] == (
        "Заменили картридж, проверьте печать.\n\nС уважением, Вера.")
    status, body = await desk.get("/canned")
    assert [c["id"] for c in body["canned"]] == [canned]
    response = await desk.client.delete(f"/canned/{canned}", headers=desk.auth())
    assert response.status == 200
    assert (await desk.get("/canned"))[1]["canned"] == []
    response = await desk.client.delete(f"/canned/{canned}", headers=desk.auth())
    assert response.status == 404


async def test_metrics_in_prometheus_text(desk):
    await desk.ticket()
    await desk.pipeline.ingest_email((DATA / "no_sender.eml").read_bytes())
    await desk.get("/nothing")
    response = await desk.client.get("/metrics")
    assert response.status == 401
    response = await desk.client.get("/metrics", headers=desk.auth())
    assert response.status == 200 and response.content_type == "text/plain"
    lines = (await response.text()).splitlines()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in lines if not line.startswith("#")}
    assert samples['helpgate_messages_in{channel="email",state="quarantined"}'] == 1
    assert sum(v for k, v in samples.items()
               if k.startswith('helpgate_messages_in{channel="email"')) == 2
    assert samples['helpgate_outbox_messages{channel="email",state="queued"}'] >= 1
    assert samples['helpgate_outbox_oldest_waiting_seconds{channel="email"}'] >= 0
    assert samples['helpgate_api_requests_total{route="unmatched",status="404"}'] == 1
    assert samples['helpgate_api_requests_total{route="/metrics",status="401"}'] == 1
    assert "# TYPE helpgate_delivery_failures gauge" in lines


async def test_a_reply_uploads_files_that_the_relay_carries(desk):
    import base64

    from helpgate.ticketstore.models import OutboxMessage
    number = await desk.ticket()
    before = await desk.outbox()
    content = "Акт сверки\n".encode() * 100
    upload = {"filename": "акт.txt", "content_type": "text/plain",
              "content_base64": base64.b64encode(content).decode()}
    for bad, words in [({**upload, "content_base64": "не base64"}, "not base64"),
                       ({**upload, "content_type": "text"}, "content_type"),
                       ({"filename": "x"}, "content_base64 is required")]:
        status, body = await desk.post(f"/tickets/{number}/reply",
                                       {"text": "Акт во вложении.", "attachments": [bad]})
        assert status == 400 and words in _error(body, 400), bad
    small = await make_desk(Config.model_validate(
        {"mail": {"max_attachment_size": len(content) - 1}}), desk.store, desk.clock)
    try:
        status, body = await small.post(f"/tickets/{number}/reply",
                                        {"text": "Акт во вложении.", "attachments": [upload]})
        assert status == 400 and "max_attachment_size" in _error(body, 400)
    finally:
        await small.client.close()
    assert len((await desk.detail(number))["comments"]) == 1
    assert await desk.outbox() == before
    status, body = await desk.post(f"/tickets/{number}/reply",
                                   {"text": "Акт во вложении.", "attachments": [upload]})
    assert status == 201
    [attachment] = (await desk.detail(number))["comments"][-1]["attachments"]
    assert (attachment["filename"], attachment["size"], attachment["stored"]) == (
        "акт.txt", len(content), True)
    response = await desk.client.get(f"/attachments/{attachment['id']}",
                                     headers=desk.auth())
    assert await response.read() == content
    [relay] = (await desk.outbox())[len(before):]
    row = await desk.store.run(lambda s: s.get(OutboxMessage, relay["id"]).attachments)
    assert row == [attachment["id"]]


async def test_a_taken_api_port_stops_the_gateway_with_one_line(sqlite_store):
    import socket

    from helpgate.channels.base import ChannelStartError
    from helpgate.gateway.run import Gateway
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config.model_validate({"api": {"enabled": True, "port": port},
                                        "mail": {"endpoint": {"enabled": False}}})
        with pytest.raises(ChannelStartError, match=f"127.0.0.1:{port}: .*\\[api\\] port"):
            await Gateway(config, sqlite_store, timer_interval=60).serve()
