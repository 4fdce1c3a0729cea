"""`helpgate import mbox|maildir` (issue "Email in and out for real", item 7): history comes
in through the pipeline, threaded as live mail would be, announced to no one, and a second
run adds nothing."""

from __future__ import annotations

import mailbox
import time

from tests.mailfactory import mail


def history() -> list[bytes]:
    return [mail(subject="Старый вопрос", message_id="<old1@client.example>"),
            mail(subject="Re: [#1] Старый вопрос", body="Дополнение к вопросу.",
                 message_id="<old2@client.example>"),
            b"From: petr@romashka.ru\nSubject: no id\n\nWithout a Message-ID.\n",
            mail(sender="olga@romashka.ru", subject="Другой вопрос")]


def test_mbox_import_is_threaded_quiet_and_idempotent(hg):
    box = mailbox.mbox(hg.tmp / "support.mbox")
    for raw in history():
        box.add(raw)
    box.flush()
    box.close()
    outbox_before = hg.outbox()
    first = hg.json("import", "mbox", str(hg.tmp / "support.mbox"), "--no-progress")
    assert first["imported"] == 4
    assert first["actions"] == {"comment": 1, "new_ticket": 3}
    assert [c["text"] for c in hg.ticket(1)["comments"]][1] == "Дополнение к вопросу."
    assert hg.outbox() == outbox_before  # history is not announced to anyone
    again = hg.json("import", "mbox", str(hg.tmp / "support.mbox"), "--no-progress")
    assert again["actions"] == {"duplicate": 4}
    assert len(hg.json("tickets", "--json")) == 3


def test_maildir_import(hg):
    box = mailbox.Maildir(hg.tmp / "Maildir")
    for raw in history():
        box.add(raw)
        time.sleep(0.002)  # distinct delivery times, as real deliveries have
    result = hg.json("import", "maildir", str(hg.tmp / "Maildir"), "--no-progress")
    assert result["actions"] == {"comment": 1, "new_ticket": 3}  # in delivery order


def test_a_path_that_is_no_mailbox_is_a_clear_error(hg):
    code, out, err = hg.run("import", "maildir", str(hg.tmp), "--no-progress")
    assert (code, out) == (1, "")
    assert err.strip() == f"helpgate: error: {hg.tmp} is not a Maildir (no cur/ and new/ folders)"
    code, _, err = hg.run("import", "mbox", str(hg.tmp / "missing.mbox"))
    assert code == 1 and "is not an mbox file" in err
