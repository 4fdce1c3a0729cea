"""The web form in a real browser: Debian's chromium driven by Playwright (its Python API,
with the system browser's executable; nothing is downloaded). Submitting, the server's
validation messages next to the fields, the form without JavaScript, Russian by the
browser's language, and a phone's width — against the form server and the pipeline on
SQLite (the HTTP tests in test_webform.py run both databases).

Without chromium or playwright these tests fail in CI (HELPGATE_REQUIRE_SERVICES=1) and
skip elsewhere.
"""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select

from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.models import Comment, Ticket
from tests.channels.test_webform import start
from tests.conftest import need_service

CHROMIUM = os.environ.get("HELPGATE_CHROMIUM") or shutil.which("chromium") \
    or "/usr/bin/chromium"


@pytest.fixture
async def browser():
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        need_service(f"playwright is not installed: {exc}")
    if not os.access(CHROMIUM, os.X_OK):
        need_service(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def form(config, sqlite_store, clock):
    adapter = await start(Pipeline(config, sqlite_store, clock=clock))
    yield adapter
    await adapter.stop()


async def page_in(browser, **options):
    context = await browser.new_context(**options)
    page = await context.new_page()
    return context, page


async def test_submit_opens_a_ticket_with_the_fields_in_its_description(
        browser, form, sqlite_store):
    context, page = await page_in(browser, locale="en-US")
    try:
        await page.goto(form.url)
        assert await page.title() == "Contact support"
        await page.get_by_label("Name").fill("Ann Lee")
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Message").fill("VPN drops every hour\nSince Monday")
        await page.get_by_role("button", name="Send").click()
        await page.wait_for_selector("h1:text('Thank you!')")
        status = await page.get_by_role("status").inner_text()
    finally:
        await context.close()
    ticket = await sqlite_store.run(lambda s: s.execute(
        select(Ticket.number, Ticket.subject, Ticket.channel)).one())
    assert status == (f"Your request is registered as number {ticket.number}. "
                      "We will answer at ann@example.org.")
    assert (ticket.subject, ticket.channel) == ("VPN drops every hour", "webform")
    text = await sqlite_store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    # Phone left empty: not in the description.
    assert text == ('"Name": "Ann Lee"\n"Email": "ann@example.org"\n'
                    '"Message": "VPN drops every hour\nSince Monday"')


async def test_server_validation_messages_next_to_the_fields(browser, form, sqlite_store):
    context, page = await page_in(browser, locale="en-US")
    try:
        await page.goto(form.url)
        # The browser's own check passes this; the server wants a domain with a dot.
        await page.get_by_label("Email").fill("ann@localhost")
        await page.get_by_label("Message").fill("Printer")
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Send").click()
        assert (await navigation.value).status == 422
        assert await page.get_by_role("alert").inner_text() == "Please check the marked fields."
        email = page.get_by_label("Email")
        assert await email.get_attribute("aria-invalid") == "true"
        assert await page.locator("#email-error").inner_text() == \
            "This is not an email address."
        # What was typed is still there; correcting one field is enough.
        assert await page.get_by_label("Message").input_value() == "Printer"
        await email.fill("ann@example.org")
        await page.get_by_role("button", name="Send").click()
        await page.wait_for_selector("h1:text('Thank you!')")
    finally:
        await context.close()
    assert len(await sqlite_store.run(lambda s: s.execute(select(Ticket.id)).all())) == 1


async def test_required_fields_checked_by_the_server_when_the_browser_does_not(
        browser, form, sqlite_store):
    context, page = await page_in(browser, locale="en-US")
    try:
        await page.goto(form.url)
        # As a browser without HTML5 checks would: the server's messages are the rule.
        await page.eval_on_selector("form", "f => f.noValidate = true")
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Send").click()
        assert (await navigation.value).status == 422
        assert await page.locator("#email-error").inner_text() == "Please fill in this field."
        assert await page.locator("#text-error").inner_text() == "Please fill in this field."
        assert await page.locator("#name-error").count() == 0
    finally:
        await context.close()
    assert await sqlite_store.run(lambda s: s.execute(select(Ticket.id)).all()) == []


async def test_works_without_javascript_and_in_russian(browser, form, sqlite_store):
    context, page = await page_in(browser, locale="ru-RU", java_script_enabled=False)
    try:
        await page.goto(form.url)
        assert await page.title() == "Обращение в поддержку"
        await page.get_by_label("Электронная почта").fill("ivan@example.org")
        await page.get_by_label("Телефон").fill("+7 916 000-00-00")
        await page.get_by_label("Сообщение").fill("Не работает почта")
        await page.get_by_role("button", name="Отправить").click()
        await page.wait_for_selector("h1:text('Спасибо!')")
        status = await page.get_by_role("status").inner_text()
    finally:
        await context.close()
    assert "зарегистрировано под номером" in status
    text = await sqlite_store.run(lambda s: s.execute(select(Comment.text)).scalar_one())
    assert text == ('"Электронная почта": "ivan@example.org"\n"Телефон": "+7 916 000-00-00"\n'
                    '"Сообщение": "Не работает почта"')


async def test_fits_a_phone_screen(browser, form):
    context, page = await page_in(browser, viewport={"width": 360, "height": 740},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        await page.goto(form.url)
        # Nothing wider than the screen: no sideways scrolling.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360
        for name in ("Email", "Message"):
            box = await page.get_by_label(name).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 360
            assert box["width"] > 250  # the fields take the width, not a sliver of it
        button = await page.get_by_role("button").bounding_box()
        assert button["height"] >= 40  # big enough to tap
        # The honeypot is out of sight.
        trap = await page.locator("#website").bounding_box()
        assert trap is None or trap["x"] + trap["width"] <= 0
    finally:
        await context.close()
