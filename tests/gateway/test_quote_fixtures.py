"""Our labelled replies (tests/data/quotes/, modelled on each client's real output, Russian
first): the comment `helpgate ingest` stores for each equals its label — the bench
(bench/quotes.py) and the pipeline use the same function, so this is the bench's figure
held to 100 % for the cases we know.

The `overcut*` families (issue #16, R-TH-2) hold the customer's own lines that look like
history — pasted ">" logs, pasted header fields, a date-and-colon sentence, a link after a
quote, answers inside an Outlook quote, The Bat!'s greeting over an answer below — above,
inside and below real quotes. A label with `history` answers a known ticket: the ticket is
made first with those texts (the customer's first message, staff answers), so the stripper
has the store's evidence, as it has in production."""

from __future__ import annotations

import email
import email.policy
import json
import re
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import people
from helpgate.ticketstore.models import Comment
from helpgate.ticketstore.repository import SessionDirectory
from tests.conftest import DATA
from tests.mailfactory import mail

FOLDER = DATA / "quotes"
LABELS = json.loads((FOLDER / "labels.json").read_text(encoding="utf-8"))
_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def test_the_set_is_what_the_issue_asks_for():
    assert len(LABELS) >= 60
    assert sum(1 for label in LABELS if label["lang"] == "ru") * 2 >= len(LABELS)
    charsets = {label["charset"].lower() for label in LABELS}
    assert {"utf-8", "windows-1251", "koi8-r"} <= charsets
    assert {"base64", "quoted-printable", "8bit"} <= {label["cte"] for label in LABELS}


def test_every_over_cutting_class_has_a_family_in_russian_and_english():
    families = {(label["overcut"], label["lang"]) for label in LABELS if "overcut" in label}
    assert families >= {(c, lang) for c in range(1, 7) for lang in ("ru", "en")}
    placements = {label["placement"] for label in LABELS if "overcut" in label}
    assert placements == {"above", "inside", "below"}


def seed(hg, label) -> int:
    """The ticket a history label answers: the customer's first message (the one the
    reply references) and the staff answers after it."""
    reply = email.message_from_bytes((FOLDER / label["file"]).read_bytes(),
                                     policy=email.policy.default)
    first = email.message.EmailMessage()
    first["From"], first["To"] = str(reply["From"]), "support@helpgate.localhost"
    first["Subject"] = re.sub(r"^\s*(re|ответ)\s*:\s*(\[#\d+\]\s*)?", "", str(reply["Subject"]),
                              flags=re.I)
    first["Message-ID"] = label["references"]
    first["Date"] = format_datetime(email.utils.parsedate_to_datetime(reply["Date"]))
    first.set_content(label["history"][0])
    number = hg.ingest(bytes(first))["ticket"]
    for answer in label["history"][1:]:
        assert hg.run("reply", str(number), answer)[0] == 0
    return number


@pytest.mark.parametrize("label", LABELS, ids=[label["file"] for label in LABELS])
def test_ingested_comment_equals_the_label(hg, label):
    number = seed(hg, label) if "history" in label else None
    result = hg.ingest(FOLDER / label["file"])
    assert result["action"] in ("new_ticket", "comment"), result
    assert number is None or result["ticket"] == number
    comment = hg.ticket(result["ticket"])["comments"][-1]
    assert norm(comment["text"]) == norm(label["expected"])


async def test_the_ticket_s_history_tells_a_pasted_log_from_the_quote(store, clock):
    """SessionDirectory.ticket_history on both backends: the comments and what we sent;
    with them, ">" lines that match nothing we sent are the customer's (R-TH-2)."""
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Anna", email="anna@helpgate.test", role="admin"), clock.now)
    pipeline = Pipeline(Config(), store, clock)
    number = (await pipeline.ingest_email(mail(body="Бэкап не проходит."))).ticket
    await pipeline.ingest_email(mail(sender="anna@helpgate.test", subject=f"Re: [#{number}]",
                                     body="Запустите бэкап вручную и пришлите вывод."))

    def history(session):
        directory = SessionDirectory(session)
        return directory.ticket_history(directory.ticket_by_number(number).id)

    texts = await store.run(history)
    assert "Бэкап не проходит." in texts
    assert "Запустите бэкап вручную и пришлите вывод." in texts
    assert any(f"[#{number}]" in text for text in texts)  # our subjects, our notifications
    reply = ("Пн, 23 нояб. 2026 г. в 12:00, Support <support@helpgate.localhost>:\n"
             "> Запустите бэкап вручную и пришлите вывод.\n\n"
             "Запустил, выдаёт одно и то же\n"
             "> backup: upload failed: 403 Forbidden\n> backup: giving up\n")
    result = await pipeline.ingest_email(mail(subject=f"Re: [#{number}]", body=reply))
    assert "quote_strip" in result.rules
    stored = await store.run(lambda session: session.scalar(
        select(Comment.text).order_by(Comment.id.desc()).limit(1)))
    assert norm(stored) == norm("Запустил, выдаёт одно и то же\n"
                                "> backup: upload failed: 403 Forbidden\n> backup: giving up")
