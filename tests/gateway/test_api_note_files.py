"""A private note with files (issue 18 part 3): POST /tickets/N/note takes attachments as
the reply does (the same schema and decoding), stores them with the note, and sends
nothing to the customer; a bad file refuses the whole note. SQLite and PostgreSQL."""

from __future__ import annotations

import base64

from tests.gateway.test_api import _error, desk  # noqa: F401  (the fixture)


async def test_a_note_keeps_its_files_and_reaches_no_one(desk):  # noqa: F811
    number = await desk.ticket()
    outbox = await desk.outbox()
    comments = len((await desk.detail(number))["comments"])
    content = "Схема подключения\n".encode() * 50
    upload = {"filename": "схема.txt", "content_type": "text/plain",
              "content_base64": base64.b64encode(content).decode()}
    for bad, words in [({**upload, "content_base64": "не base64"}, "not base64"),
                       ({"filename": "x"}, "content_base64 is required"),
                       ({**upload, "size": 1}, "unknown field")]:
        status, body = await desk.post(f"/tickets/{number}/note",
                                       {"text": "Схема во вложении.", "attachments": [bad]})
        assert status == 400 and words in _error(body, 400), bad
    assert len((await desk.detail(number))["comments"]) == comments
    status, body = await desk.post(f"/tickets/{number}/note",
                                   {"text": "Схема во вложении.",
                                    "attachments": [upload, {**upload, "filename": "2.txt"}]})
    assert status == 201 and body["public"] is False and body["queued"] == []
    note = (await desk.detail(number))["comments"][-1]
    assert (note["public"], note["text"]) == (False, "Схема во вложении.")
    assert [(a["filename"], a["size"], a["stored"]) for a in note["attachments"]] == [
        ("схема.txt", len(content), True), ("2.txt", len(content), True)]
    response = await desk.client.get(f"/attachments/{note['attachments'][0]['id']}",
                                     headers=desk.auth())
    assert await response.read() == content
    assert await desk.outbox() == outbox  # nothing to the customer
