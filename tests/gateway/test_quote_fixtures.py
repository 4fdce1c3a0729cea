"""Our labelled replies (tests/data/quotes/, modelled on each client's real output, Russian
first): the comment `helpgate ingest` stores for each equals its label — the bench
(bench/quotes.py) and the pipeline use the same function, so this is the bench's figure
held to 100 % for the cases we know."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import DATA

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


@pytest.mark.parametrize("label", LABELS, ids=[label["file"] for label in LABELS])
def test_ingested_comment_equals_the_label(hg, label):
    result = hg.ingest(FOLDER / label["file"])
    assert result["action"] in ("new_ticket", "comment"), result
    comment = hg.ticket(result["ticket"])["comments"][-1]
    assert norm(comment["text"]) == norm(label["expected"])
