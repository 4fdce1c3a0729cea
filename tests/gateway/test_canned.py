"""Canned answers grouped by case (R-OUT-7): the staff API and `helpgate canned` file
answers under cases and list them grouped, a title is unique across every case, and
`helpgate reply --canned` sends one (by id or title) the way the API's reply does — by
SMS under the SMS length rule."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from helpgate.ticketstore.migrations import upgrade
from helpgate.ticketstore.repository import Store
from tests.fakes.sms import FakeSmsc, settings_for
from tests.gateway.test_api import _error, desk  # noqa: F401  (the fixture)
from tests.gateway.test_cli_sms import _send_outbox
from tests.mailfactory import mail


async def test_the_api_files_answers_under_cases_and_lists_them_grouped(desk):  # noqa: F811
    made = {}
    for title, case in [("Картридж", "Принтеры"), ("Бумага", "Принтеры"),
                        ("Счёт", "Оплата"), ("Спасибо", None)]:
        body = {"title": title, "text": f"Текст: {title}"}
        if case:
            body["case"] = case
        status, row = await desk.post("/canned", body)
        assert status == 201 and row["case"] == case
        made[title] = row["id"]
    status, body = await desk.post("/canned", {"title": "Счёт", "text": "x",
                                               "case": "Принтеры"})
    assert status == 409 and "exists" in _error(body, 409)  # unique across cases
    status, body = await desk.get("/canned")
    assert status == 200 and len(body["canned"]) == 4
    assert body["cases"] == [
        {"case": "Оплата", "answers": [{"id": made["Счёт"], "title": "Счёт"}]},
        {"case": "Принтеры", "answers": [{"id": made["Бумага"], "title": "Бумага"},
                                         {"id": made["Картридж"], "title": "Картридж"}]},
        {"case": None, "answers": [{"id": made["Спасибо"], "title": "Спасибо"}]}]
    status, body = await desk.get("/canned", case="Принтеры")
    assert [r["title"] for r in body["canned"]] == ["Картридж", "Бумага"]
    assert [g["case"] for g in body["cases"]] == ["Принтеры"]
    status, body = await desk.get("/canned", case="")
    assert status == 400
    # Moving an answer to another case, and out of every case.
    response = await desk.client.put(f"/canned/{made['Бумага']}", headers=desk.auth(),
                                     json={"case": " Оплата "})
    assert response.status == 200 and (await response.json())["case"] == "Оплата"
    response = await desk.client.put(f"/canned/{made['Счёт']}", headers=desk.auth(),
                                     json={"case": ""})
    assert (await response.json())["case"] is None
    response = await desk.client.put(f"/canned/{made['Картридж']}", headers=desk.auth(),
                                     json={"text": "Новый текст"})
    row = await response.json()
    assert (row["case"], row["text"]) == ("Принтеры", "Новый текст")  # case kept
    status, body = await desk.get("/canned", case="Оплата")
    assert [r["title"] for r in body["canned"]] == ["Бумага"]


def test_the_cli_adds_lists_shows_and_removes(hg):
    first = hg.json("canned", "add", "Картридж", "Заменили картридж.", "--case", "Принтеры")
    assert (first["title"], first["case"], first["text"]) == (
        "Картридж", "Принтеры", "Заменили картридж.")
    second = hg.json("canned", "add", "Спасибо", "Спасибо за обращение.")
    code, out, _ = hg.run("canned", "list")
    assert out.splitlines() == [f"Принтеры\t{first['id']}\tКартридж",
                                f"(no case)\t{second['id']}\tСпасибо"]
    listed = hg.json("canned", "list", "--json", "--case", "Принтеры")
    assert [r["id"] for r in listed["canned"]] == [first["id"]]
    assert hg.json("canned", "show", "Картридж", "--json") == first
    assert hg.json("canned", "show", str(first["id"]), "--json") == first
    for args, message in [(("add", "Картридж", "x"), "exists"),
                          (("add", "  ", "x"), "needs a title and a text"),
                          (("add", "x" * 201, "x"), "1 to 200 characters"),
                          (("show", "Нет такого"), "no canned answer 'Нет такого'"),
                          (("remove", "999"), "no canned answer '999'")]:
        code, out, err = hg.run("canned", *args)
        assert (code, out) == (1, "") and message in err, args
    assert len(hg.json("canned", "list", "--json")["canned"]) == 2
    assert hg.json("canned", "remove", "Спасибо")["deleted"]["id"] == second["id"]
    assert [r["id"] for r in hg.json("canned", "list", "--json")["canned"]] == [first["id"]]


def test_reply_with_a_canned_answer_by_title_or_id(hg):
    number = hg.ingest(mail(subject="Принтер"))["ticket"]
    row = hg.json("canned", "add", "Картридж", "Заменили картридж.", "--case", "Принтеры")
    result = hg.json("reply", str(number), "--canned", "Картридж", "--as",
                     "vera@helpgate.test")
    assert result["queued"] == [{"channel": "email", "to": "ivan@romashka.ru"}]
    hg.json("reply", str(number), "С уважением, Вера.", "--canned", str(row["id"]))
    texts = [c["text"] for c in hg.ticket(number)["comments"][-2:]]
    assert texts == ["Заменили картридж.", "Заменили картридж.\n\nС уважением, Вера."]
    comments = len(hg.ticket(number)["comments"])
    for args, message in [(("--canned", "Нет такого"), "no canned answer 'Нет такого'"),
                          ((), "give the reply's text")]:
        code, out, err = hg.run("reply", str(number), *args)
        assert (code, out) == (1, "") and message in err
    assert len(hg.ticket(number)["comments"]) == comments


async def test_a_canned_answer_by_sms_keeps_to_the_length_rule(hg):
    async with FakeSmsc() as fake:
        values = settings_for(fake, max_parts=1)
        hg.configure("[notifications]\nacknowledge_new_tickets = false\n[sms]\n" + "\n".join(
            f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()) + "\n")
        number = (await asyncio.to_thread(hg.ingest, mail(subject="Принтер")))["ticket"]
        long_text = "Картридж заменили, принтер снова печатает. " * 4
        await asyncio.to_thread(hg.json, "canned", "add", "Картридж", long_text, "--case",
                                "Принтеры")
        result = await asyncio.to_thread(hg.json, "reply", str(number), "--canned",
                                         "Картридж", "--via", "sms")
        [queued] = result["queued"]
        assert queued["channel"] == "sms" and queued["to"] == "+79161234567"
        assert (queued["sms"]["parts"], queued["sms"]["trimmed"]) == (1, True)
        await asyncio.to_thread(_send_outbox, hg)
        [sent] = fake.sent
        assert len(sent.text) <= 70 and sent.text.endswith("…")
        assert sent.text.startswith("Картридж заменили")


async def test_upgrade_keeps_canned_answers_under_no_case(tmp_path):
    """0016 adds the case to answers that exist: they keep title and text, in no case."""
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await upgrade(store, "0014")
        await store.run_connection(lambda c: c.execute(text(
            "INSERT INTO canned_answers (title, text, created_at, updated_at) VALUES "
            "('Картридж', 'Заменили.', '2026-11-30 09:00:00', '2026-11-30 09:00:00')")))
        await upgrade(store)
        from helpgate.ticketstore.canned import canned_list
        [row] = await store.run(canned_list)
        assert (row["title"], row["text"], row["case"]) == ("Картридж", "Заменили.", None)
    finally:
        await store.close()
