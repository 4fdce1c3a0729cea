"""The web form's custom fields and file upload in a real browser (Debian's chromium by
Playwright, nothing downloaded): a required custom field refused by the server with its
message beside it, a select that keeps its choice, and files chosen in the file input
that arrive as the ticket's attachments; a file too large refused beside the file field,
with JavaScript off, as the form must work without it. Against the form server and the
pipeline on SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.models import Attachment, Comment
from tests.channels.test_webform import start
from tests.channels.test_webform_browser import browser, page_in  # noqa: F401

FIELDS = [{"name": "order", "label": "Order number", "required": True},
          {"name": "topic", "label": "Topic", "type": "select",
           "options": ["Billing", "Delivery"]}]


@pytest.fixture
async def form(config, sqlite_store, clock):
    adapter = await start(Pipeline(config, sqlite_store, clock=clock), fields=FIELDS,
                          max_files=2, max_file_size=2000)
    yield adapter
    await adapter.stop()


async def attachments(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(Attachment.filename, Attachment.data).order_by(Attachment.id))])


async def test_a_custom_field_checked_by_the_server_and_an_upload(
        browser, form, sqlite_store):  # noqa: F811
    context, page = await page_in(browser, locale="en-US")
    try:
        await page.goto(form.url)
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Message").fill("Parcel damaged")
        await page.get_by_label("Topic").select_option("Delivery")
        # Order number left empty; as a browser without HTML5 checks would send it.
        await page.eval_on_selector("form", "f => f.noValidate = true")
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Send").click()
        assert (await navigation.value).status == 422
        assert await page.locator("#order-error").inner_text() == \
            "Please fill in this field."
        assert await page.get_by_label("Order number").get_attribute("aria-invalid") == "true"
        assert await page.get_by_label("Topic").input_value() == "Delivery"  # kept
        await page.get_by_label("Order number").fill("A-17")
        await page.set_input_files("#files", files=[
            {"name": "photo.txt", "mimeType": "text/plain", "buffer": b"x" * 1500},
            {"name": "акт.txt", "mimeType": "text/plain", "buffer": "акт".encode()}])
        await page.get_by_role("button", name="Send").click()
        await page.wait_for_selector("h1:text('Thank you!')")
    finally:
        await context.close()
    text = await sqlite_store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    assert text == ('"Email": "ann@example.org"\n"Order number": "A-17"\n'
                    '"Topic": "Delivery"\n"Message": "Parcel damaged"')
    assert await attachments(sqlite_store) == [("photo.txt", b"x" * 1500),
                                               ("акт.txt", "акт".encode())]


async def test_without_javascript_a_file_too_large_is_refused_beside_the_field(
        browser, form, sqlite_store):  # noqa: F811
    context, page = await page_in(browser, locale="en-US", java_script_enabled=False)
    try:
        await page.goto(form.url)
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Order number").fill("A-18")
        await page.get_by_label("Message").fill("Invoice attached")
        await page.set_input_files("#files", files=[
            {"name": "big.pdf", "mimeType": "application/pdf", "buffer": b"%" * 2001}])
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Send").click()
        assert (await navigation.value).status == 422
        assert await page.locator("#files-error").inner_text() == (
            "big.pdf is larger than 2.0 KB; please choose the files again.")
        assert await page.get_by_label("Order number").input_value() == "A-18"
        assert await attachments(sqlite_store) == []
        await page.set_input_files("#files", files=[
            {"name": "small.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4"}])
        await page.get_by_role("button", name="Send").click()
        await page.wait_for_selector("h1:text('Thank you!')")
    finally:
        await context.close()
    assert await attachments(sqlite_store) == [("small.pdf", b"%PDF-1.4")]
