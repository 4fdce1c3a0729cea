"""The web form (R-CH-5) over HTTP with the pipeline on SQLite and PostgreSQL: the ticket
and its description built from the fields, the subject rule, validation (422), sizes
(413), origins (403), the honeypot, the rate limits, languages, and a kept record read
again the same. The same pages in a real browser: test_webform_browser.py."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from sqlalchemy import select

from helpgate.channels.base import ChannelStartError
from helpgate.channels.webform.adapter import WebformAdapter, accepted_language
from helpgate.channels.webform.parse import description, envelope, parse
from helpgate.config.schema import Config, WebformConfig
from helpgate.gateway.channels import CHANNELS
from helpgate.threading.context import Action
from helpgate.ticketstore.models import Comment, Contact, OutboxMessage, Ticket
from helpgate.ticketstore.models import InboundMessage as InboundRow
from tests.services import services_for

ORIGIN = "https://www.example.com"


def form_config(**values) -> WebformConfig:
    return WebformConfig(**{"enabled": True, "port": 0, "allowed_origins": [ORIGIN],
                            **values})


async def start(pipeline, config: Config | None = None, ingest=None, **values):
    config = (config or pipeline.config).model_copy(
        update={"webform": form_config(**values)})
    adapter = WebformAdapter(config.webform, services_for(pipeline, ingest=ingest),
                             texts=config.text, language=config.language,
                             fallback_language=config.fallback_language)
    await adapter.start()
    adapter.url = f"http://127.0.0.1:{adapter.port}/form"
    return adapter


@pytest.fixture
async def form(pipeline):
    adapter = await start(pipeline)
    yield adapter
    await adapter.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


FILLED = {"name": "Иван Петров", "email": "Ivan@Example.org", "phone": "+7 916 123-45-67",
          "text": "Не печатает принтер\nМодель HP 1020, третий этаж", "lang": "en"}


async def post(http, form, data=None, headers=None, url=None):
    async with http.post(url or form.url, data=FILLED if data is None else data,
                         headers=headers or {}) as response:
        return response.status, await response.text()


async def tickets(store) -> list:
    return await store.run(lambda s: s.execute(
        select(Ticket.number, Ticket.subject, Ticket.channel, Ticket.contact_id)
        .order_by(Ticket.id)).all())


async def inbound(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(InboundRow.state, InboundRow.reason).order_by(InboundRow.id))])


def error_of(page: str, field: str) -> str | None:
    found = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    return found.group(1) if found else None


async def test_a_submission_opens_a_ticket_with_the_fields_in_its_description(
        form, http, store):
    status, page = await post(http, form)
    assert status == 200
    [ticket] = await tickets(store)
    assert (ticket.subject, ticket.channel) == ("Не печатает принтер", "webform")
    assert f"registered as number {ticket.number}" in page
    assert "ivan@example.org" in page.lower()
    text = await store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    assert text == ('"Name": "Иван Петров"\n'
                    '"Email": "Ivan@Example.org"\n'
                    '"Phone": "+7 916 123-45-67"\n'
                    '"Message": "Не печатает принтер\nМодель HP 1020, третий этаж"')
    # Bound to a contact by the email, as mail is; name and phone come with it.
    contact = await store.run(lambda s: s.execute(
        select(Contact.id, Contact.email, Contact.name)).one())
    assert ticket.contact_id == contact.id
    assert contact.email == "ivan@example.org"
    assert contact.name == "Иван Петров"
    # The acknowledgement goes out by email (the form itself sends nothing).
    acks = await store.run(lambda s: s.execute(
        select(OutboxMessage.channel, OutboxMessage.recipient)
        .where(OutboxMessage.kind == "ack")).all())
    assert [tuple(a) for a in acks] == [("email", "ivan@example.org")]


async def test_the_same_email_later_is_the_same_contact_and_empty_fields_stay_out(
        form, http, store):
    await post(http, form)
    status, _ = await post(http, form, {"email": "ivan@example.org", "text": "Ещё вопрос"})
    assert status == 200
    rows = await tickets(store)
    assert len(rows) == 2 and rows[0].contact_id == rows[1].contact_id
    texts = await store.run(lambda s: s.execute(
        select(Comment.text).order_by(Comment.id)).scalars().all())
    assert texts[1] == '"Email": "ivan@example.org"\n"Message": "Ещё вопрос"'


async def test_the_subject_is_the_first_line_of_the_text(form, http, store):
    await post(http, form, {**FILLED, "text": "\n\n  Printer jammed  \nsecond line"})
    assert (await tickets(store))[0].subject == "Printer jammed"


def test_without_a_text_field_the_subject_is_the_default():
    """R-CH-5's other half: a record whose form had no request text."""
    fields = [{"key": "email", "label": "Email", "value": "a@example.org"}]
    raw = envelope("x1", fields, lang="en", subject="Request via web form")
    message = parse(raw, _now())
    assert message.subject == "Request via web form"
    # Without the text it is no request: kept in quarantine with the reason.
    assert message.problem == "web form submission without a message"
    assert description(fields) == '"Email": "a@example.org"'


def _now():
    from datetime import datetime, timezone
    return datetime(2026, 11, 30, tzinfo=timezone.utc)


async def test_the_form_in_russian_by_accept_language_and_the_labels_it_showed(
        form, http, store):
    async with http.get(form.url, headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"}) \
            as response:
        page = await response.text()
    assert response.status == 200 and '<html lang="ru">' in page
    assert "Электронная почта" in page and 'name="lang" value="ru"' in page
    async with http.get(form.url + "?lang=en",
                        headers={"Accept-Language": "ru"}) as response:
        assert '<html lang="en">' in await response.text()
    status, page = await post(http, form, {**FILLED, "lang": "ru"})
    assert status == 200 and "зарегистрировано под номером" in page
    text = await store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    assert text.startswith('"Имя": "Иван Петров"\n"Электронная почта": ')


def test_accept_language_by_weight():
    assert accepted_language("de, en;q=0.5, ru;q=0.8") == "ru"
    assert accepted_language("en-GB,en;q=0.9") == "en"
    assert accepted_language("de, fr") is None
    assert accepted_language("ru;q=0, en;q=bad") is None


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"name": "x", "text": "help"}, "email", "Please fill in this field."),
    ({"email": "ivan@example.org", "text": "   "}, "text", "Please fill in this field."),
    ({"email": "ivan@", "text": "help"}, "email", "This is not an email address."),
    ({"email": "ivan@localhost", "text": "help"}, "email", "This is not an email address."),
    ({"email": "a@example.org", "text": "x" * 10001}, "text", "At most 10000 characters."),
    ({"email": "a@example.org", "text": "help", "name": "n" * 201}, "name",
     "At most 200 characters."),
])
async def test_invalid_input_is_shown_next_to_the_field_and_nothing_is_stored(
        form, http, store, data, field, message):
    status, page = await post(http, form, {**data, "lang": "en"})
    assert status == 422
    assert error_of(page, field) == message
    assert "Please check the marked fields." in page
    # What was typed is in the form again (escaped), so nothing need be typed twice.
    if data.get("name"):
        assert f'value="{data["name"]}"' in page
    assert await inbound(store) == []


async def test_values_are_escaped_when_the_form_comes_back(form, http, store):
    status, page = await post(http, form, {"email": "bad", "name": '"><script>x</script>',
                                            "text": "</textarea><b>hi</b>"})
    assert status == 422
    assert "<script>" not in page and "</textarea><b>" not in page
    assert "&lt;/textarea&gt;&lt;b&gt;hi&lt;/b&gt;" in page


async def test_a_body_over_the_size_limit_is_refused(pipeline, http, store):
    adapter = await start(pipeline, max_body_size="2KB")
    try:
        status, _ = await post(http, adapter, {**FILLED, "text": "x" * 4000})
    finally:
        await adapter.stop()
    assert status == 413
    assert await inbound(store) == []


async def test_origins(form, http, store):
    status, text = await post(http, form, headers={"Origin": "https://evil.example"})
    assert (status, text) == (403, "this site may not post the form")
    status, _ = await post(http, form, headers={"Origin": "null"})
    assert status == 403
    assert await inbound(store) == []
    # An allowed site, and the form helpgate itself served (same host), both pass.
    assert (await post(http, form, headers={"Origin": ORIGIN + "/"}))[0] == 200
    own = f"https://127.0.0.1:{form.port}"
    assert (await post(http, form, headers={"Origin": own}))[0] == 200
    assert len(await tickets(store)) == 2


async def test_the_page_may_be_framed_only_by_allowed_sites(form, http):
    async with http.get(form.url) as response:
        policy = response.headers["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {ORIGIN}" in policy
    assert "form-action 'self'" in policy


async def test_a_filled_honeypot_looks_like_success_and_is_kept_in_quarantine(
        form, http, store, pipeline):
    status, page = await post(http, form, {**FILLED, "website": "http://spam.example"})
    assert status == 200
    assert "received and will be looked at" in page
    assert await tickets(store) == []
    [(state, reason)] = await inbound(store)
    assert state == "quarantined"
    assert reason.startswith("the web form's hidden spam-trap field was filled in "
                             "('http://spam.example')")
    # A person's browser may have filled it: the admin's replay makes it a ticket.
    inbound_id = await store.run(lambda s: s.execute(select(InboundRow.id)).scalar_one())
    result = await pipeline.replay(inbound_id)
    assert result.action == Action.NEW_TICKET
    [ticket] = await tickets(store)
    assert ticket.subject == "Не печатает принтер"


async def test_the_rate_limit_per_client_address(pipeline, clock, http, store):
    adapter = await start(pipeline, rate_limit=2, rate_window="1h",
                          client_ip_header="X-Forwarded-For")
    one = {"X-Forwarded-For": "10.0.0.1, 203.0.113.5"}
    other = {"X-Forwarded-For": "203.0.113.6"}
    try:
        assert (await post(http, adapter, headers=one))[0] == 200
        # Invalid posts are not counted: correcting a typo costs nothing.
        assert (await post(http, adapter, {"email": "x"}, headers=one))[0] == 422
        assert (await post(http, adapter, headers=one))[0] == 200
        status, page = await post(http, adapter, headers=one)
        assert status == 429
        assert "Too many requests from your address" in page
        assert "Модель HP 1020" in page  # the text is kept in the form
        assert (await post(http, adapter, headers=other))[0] == 200
        clock.advance(hours=1, seconds=1)
        assert (await post(http, adapter, headers=one))[0] == 200
    finally:
        await adapter.stop()
    assert len(await tickets(store)) == 4


async def test_the_rate_limit_per_email_is_the_pipelines_throttle(pipeline, http, store):
    config = pipeline.config.model_copy(update={"threading": pipeline.config.threading
                                                .model_copy(update={"throttle_max": 2})})
    pipeline.config = config
    adapter = await start(pipeline, config=config, rate_limit=0)
    try:
        for _ in range(2):
            assert (await post(http, adapter))[0] == 200
        status, page = await post(http, adapter)
    finally:
        await adapter.stop()
    # Kept, not lost: quarantined with the reason, and the person is told it arrived.
    assert status == 200 and "received and will be looked at" in page
    assert len(await tickets(store)) == 2
    state, reason = (await inbound(store))[-1]
    assert state == "quarantined" and reason.startswith("throttled: 3 messages from "
                                                        "ivan@example.org")


@pytest.mark.pipeline_errors_expected
async def test_answered_only_once_stored_and_a_failure_keeps_the_form(pipeline, http, store):
    entered, stored, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_ingest(messages, ticket_type):
        entered.set()
        await release.wait()
        results = await pipeline.ingest_many(messages, ticket_type)
        stored.set()
        return results

    adapter = await start(pipeline, ingest=slow_ingest)
    try:
        request = asyncio.ensure_future(post(http, adapter))
        await entered.wait()
        # The submission is in the pipeline and not yet stored: no answer yet.
        assert not request.done()
        release.set()
        status, _ = await request
        assert status == 200 and stored.is_set()
    finally:
        await adapter.stop()

    async def broken(messages, ticket_type):
        raise RuntimeError("database away")

    adapter = await start(pipeline, ingest=broken)
    try:
        status, page = await post(http, adapter)
    finally:
        await adapter.stop()
    assert status == 503
    assert "could not be stored" in page and "Модель HP 1020" in page


async def test_a_kept_record_is_read_again_the_same(form, http, store, pipeline):
    await post(http, form)
    data = await store.run(lambda s: s.execute(select(InboundRow.raw)).scalar_one())
    record = json.loads(data)
    assert [f["key"] for f in record["fields"]] == ["name", "email", "phone", "text"]
    again = CHANNELS["webform"].kind.parse(data, pipeline.clock())
    assert again.subject == "Не печатает принтер"
    assert again.sender_email == "ivan@example.org" and again.sender_phone.startswith("+7")
    assert again.text.startswith('"Name": "Иван Петров"')


@pytest.mark.parametrize("raw", [b"", b"[]", b"{}", b'{"id": 1, "fields": [1]}',
                                 b"\xff\xfe", b'{"id": "x", "fields": null}'])
def test_parse_never_raises(raw):
    message = parse(raw, _now())
    assert message.channel == "webform" and message.problem


def test_the_channel_is_registered_and_off_by_default():
    entry = CHANNELS["webform"]
    assert entry.kind.adapters(Config(), None) == []
    assert entry.transport(Config()) is None


async def test_a_port_in_use_says_what_to_change(form, pipeline):
    with pytest.raises(ChannelStartError, match="another program listens there"):
        await start(pipeline, port=form.port)


def test_the_actions_that_name_a_ticket_are_the_pipelines():
    """The adapter may not import threading.context; its list is kept in step here."""
    from helpgate.channels.webform.adapter import ANSWERED
    assert set(ANSWERED) == {Action.NEW_TICKET, Action.COMMENT, Action.REOPENED,
                             Action.NEW_TICKET_AFTER_WINDOW}


async def test_helpgate_run_serves_the_form_when_enabled(store, clock, http):
    """The gateway builds the adapter from [webform] through the registry, and stopping
    it closes the form."""
    from helpgate.gateway.run import Gateway
    from tests.waiting import eventually
    config = Config(mail={"endpoint": {"enabled": False}},
                    webform={"enabled": True, "port": 0, "path": "/support"})
    gateway = Gateway(config, store, clock=clock)
    [adapter] = [a for a in gateway.channels if isinstance(a, WebformAdapter)]
    serving = asyncio.create_task(gateway.serve())
    try:
        await eventually(lambda: adapter.port, what="the form server listening")
        url = f"http://127.0.0.1:{adapter.port}/support"
        async with http.get(url) as response:
            assert response.status == 200
            assert 'action="/support?lang=en"' in await response.text()
        assert (await post(http, adapter, url=url))[0] == 200
    finally:
        gateway.stop.set()
        await serving
    [ticket] = await tickets(store)
    assert ticket.channel == "webform"
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, adapter, url=url)
