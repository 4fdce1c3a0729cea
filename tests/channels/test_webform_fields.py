"""The web form's custom fields and file uploads (R-CH-5, issue 18 part 4) over HTTP with
the pipeline on SQLite and PostgreSQL: configured fields shown in order and put into the
description as `"Field": "value"` lines, checked by the server with the message next to
the field; files attached to the ticket's first comment, refused beside the file field
when too many or too large (nothing stored); the config's rules for fields; and
`helpgate webform check`. In a real browser: test_webform_fields_browser.py."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from helpgate.channels.webform.parse import envelope, parse
from helpgate.config.schema import Config, WebformConfig
from helpgate.ticketstore.models import Attachment, Comment
from tests.channels.test_webform import FILLED, error_of, inbound, start, tickets
from tests.conftest import Clock

FIELDS = [
    {"name": "order", "label": {"en": "Order number", "ru": "Номер заказа"},
     "required": True, "max_length": 10},
    {"name": "topic", "label": "Topic", "type": "select",
     "options": ["Billing", "Delivery"]},
    {"name": "details", "label": "Details", "type": "textarea"},
]


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def form(pipeline):
    adapter = await start(pipeline, fields=FIELDS, max_files=2, max_file_size=1000)
    yield adapter
    await adapter.stop()


def multipart(values: dict, files: list[tuple[str, bytes]] = ()) -> aiohttp.FormData:
    # As a browser sends it: a file's name as UTF-8, not percent-encoded.
    data = aiohttp.FormData(quote_fields=False)
    for key, value in values.items():
        data.add_field(key, value)
    for name, content in files:
        data.add_field("files", content, filename=name, content_type="text/plain")
    return data


async def send(http, form, data):
    async with http.post(form.url, data=data) as response:
        return response.status, await response.text()


async def test_custom_fields_are_shown_and_go_into_the_description(form, http, store):
    async with http.get(form.url + "?lang=ru") as response:
        page = await response.text()
    assert 'enctype="multipart/form-data"' in page
    assert '<label for="order">Номер заказа</label>' in page
    assert '<option value="Delivery">Delivery</option>' in page
    assert '<textarea id="details" name="details"' in page
    assert page.index('id="phone"') < page.index('id="order"') < page.index('id="text"')
    values = {**FILLED, "order": "A-17", "topic": "Delivery", "details": "Коробка\nмятая"}
    status, page = await send(http, form, multipart(values))
    assert status == 200, page
    text = await store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    assert text == ('"Name": "Иван Петров"\n"Email": "Ivan@Example.org"\n'
                    '"Phone": "+7 916 123-45-67"\n"Order number": "A-17"\n'
                    '"Topic": "Delivery"\n"Details": "Коробка\nмятая"\n'
                    '"Message": "Не печатает принтер\nМодель HP 1020, третий этаж"')


@pytest.mark.parametrize("values, field, message", [
    ({}, "order", "Please fill in this field."),
    ({"order": "A-1234567890"}, "order", "At most 10 characters."),
    ({"order": "A-1", "topic": "Returns"}, "topic", "Please choose one of the options."),
])
async def test_custom_fields_are_checked_beside_the_field(form, http, store, values, field,
                                                          message):
    status, page = await send(http, form, multipart({**FILLED, **values}))
    assert status == 422
    assert error_of(page, field) == message
    assert f'aria-describedby="{field}-error"' in page
    assert await inbound(store) == []


async def test_files_are_attached_to_the_first_comment(form, http, store, pipeline):
    files = [("схема.txt", "Схема\n".encode() * 50), ("b.txt", b"second")]
    status, page = await send(http, form, multipart({**FILLED, "order": "A-1"}, files))
    assert status == 200, page
    [ticket] = await tickets(store)
    kept = await store.run(lambda s: [tuple(r) for r in s.execute(
        select(Attachment.filename, Attachment.size, Attachment.stored, Attachment.data)
        .join(Comment, Comment.id == Attachment.comment_id).order_by(Attachment.id))])
    assert kept == [(name, len(data), True, data) for name, data in files]
    # An empty file input (nothing chosen) is no file.
    status, _ = await send(http, form, multipart({**FILLED, "order": "A-2"}, [("", b"")]))
    assert status == 200
    assert len(await store.run(lambda s: s.execute(select(Attachment.id)).all())) == 2


@pytest.mark.parametrize("files, message", [
    ([("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")],
     "At most 2 files; please choose the files again."),
    ([("big.txt", b"x" * 1001)],
     "big.txt is larger than 1000 B; please choose the files again."),
])
async def test_too_many_or_too_large_files_are_refused_beside_the_field(
        form, http, store, files, message):
    status, page = await send(http, form, multipart({**FILLED, "order": "A-1"}, files))
    assert status == 422
    assert error_of(page, "files") == message
    assert 'value="A-1"' in page  # the fields are kept
    assert await inbound(store) == []


async def test_without_files_configured_the_form_has_no_file_field(pipeline, http):
    adapter = await start(pipeline)
    try:
        async with http.get(adapter.url) as response:
            page = await response.text()
    finally:
        await adapter.stop()
    assert 'type="file"' not in page and "multipart" not in page


def test_a_kept_record_with_files_reads_back_the_same():
    raw = envelope("1", [{"key": "email", "label": "Email", "value": "a@b.ru"},
                         {"key": "text", "label": "Message", "value": "hi"}],
                   lang="en", subject="Request", files=[("a.bin", "application/pdf",
                                                         b"\x00\xff")])
    message = parse(raw, Clock().now)
    assert message.problem is None
    [attachment] = message.attachments
    assert (attachment.filename, attachment.content_type, attachment.data) == (
        "a.bin", "application/pdf", b"\x00\xff")
    broken = raw.replace(b'"data_b64":"AP8="', b'"data_b64":"%%%"')
    assert "not a web form record" in parse(broken, Clock().now).problem


@pytest.mark.parametrize("field, words", [
    ({"name": "email", "label": "E"}, "one of the form's own fields"),
    ({"name": "Order", "label": "E"}, "is not a field name"),
    ({"name": "x", "label": "X", "type": "radio"}, "is not a field type"),
    ({"name": "x", "label": "X", "type": "select"}, "a select needs options"),
    ({"name": "x", "label": "X", "options": ["a"]}, "options are for type"),
    ({"name": "x", "label": {"de": "X"}}, "no language 'de'"),
    ({"name": "x", "label": " "}, "needs a label"),
])
def test_bad_fields_stop_the_config(field, words):
    with pytest.raises(ValidationError, match=words):
        WebformConfig(fields=[field])
    with pytest.raises(ValidationError, match="listed twice"):
        WebformConfig(fields=[FIELDS[0], FIELDS[0]])


def test_the_config_limits_a_request_by_its_files():
    config = Config.model_validate({"webform": {"max_body_size": "64KB", "max_files": 2,
                                                "max_file_size": "1MB"}})
    assert config.webform.request_limit() == 64 * 1024 + 2 * (1024 * 1024 + 4096)
