"""What the CLI shows of a ticket and what leaves it (issue #15): ticket times, stored
attachments and their export."""

from __future__ import annotations

from email.message import EmailMessage

from tests.mailfactory import mail


def test_resolution_time_is_null_until_the_ticket_is_resolved(hg):
    """R-TS-4: only a resolved ticket has a resolution time."""
    number = hg.ingest(mail())["ticket"]
    assert hg.ticket(number)["resolution_seconds"] is None
    assert hg.run("status", str(number), "resolved")[0] == 0
    assert isinstance(hg.ticket(number)["resolution_seconds"], float)
    hg.ingest(mail(subject=f"Re: [#{number}] Не работает принтер", body="Снова не печатает."))
    reopened = hg.ticket(number)
    assert reopened["status"] == "open" and reopened["resolution_seconds"] is None


def test_a_follow_up_ticket_drops_the_old_marker_and_reply_prefixes(hg):
    """A reply to a closed ticket opens a new one titled like the original request."""
    hg.ingest(mail(subject="Не печатает принтер"))
    for status in ("resolved", "closed"):
        assert hg.run("status", "1", status)[0] == 0
    result = hg.ingest(mail(subject="Ответ: RE: [#1] Не печатает принтер", body="Опять."))
    assert (result["action"], result["ticket"]) == ("new_ticket_after_window", 2)
    assert hg.ticket(2)["subject"] == "Не печатает принтер"
    acks = [row["subject"] for row in hg.outbox() if row["kind"] == "ack"]
    assert acks == ["[#1] Не печатает принтер", "[#2] Не печатает принтер"]


HOSTILE_NAMES = {"../../etc/passwd": "etc_passwd", "/root/.ssh/authorized_keys":
                 "root_.ssh_authorized_keys", "a\x00b\u2028c.pdf": "ab c.pdf", "..": "attachment-4"}


def hostile_mail() -> bytes:
    message = EmailMessage()
    message["From"], message["To"] = "ivan@romashka.ru", "support@helpgate.localhost"
    message["Subject"], message["Message-ID"] = "Файлы", "<files@client.example>"
    message.set_content("Файлы во вложении.")
    for number, name in enumerate(HOSTILE_NAMES):
        # RFC 2231 carries any character, NUL included, as the client sent it.
        message.add_attachment(f"file {number}".encode(), maintype="application",
                               subtype="octet-stream", filename=("utf-8", "", name))
    return bytes(message)


def test_attachment_get_writes_only_safe_names(hg, tmp_path, monkeypatch):
    number = hg.ingest(hostile_mail())["ticket"]
    attachments = hg.ticket(number)["comments"][0]["attachments"]
    # Path-like names are stored as sent (characters no backend stores are not).
    assert [a["filename"] for a in attachments if a["filename"] in HOSTILE_NAMES] == [
        "../../etc/passwd", "/root/.ssh/authorized_keys", ".."]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for item, safe in zip(attachments, HOSTILE_NAMES.values(), strict=True):
        shown = hg.json("attachment", "get", str(item["id"]))
        assert shown["path"] == str(work / safe)
    assert sorted(p.name for p in work.iterdir()) == sorted(HOSTILE_NAMES.values())
    assert (work / "etc_passwd").read_bytes() == b"file 0"
    assert not (tmp_path / "etc").exists()


def test_attachment_get_to_a_folder_a_file_and_refusals(hg, tmp_path, monkeypatch):
    hg.ingest(hostile_mail())
    folder = tmp_path / "out"
    folder.mkdir()
    assert hg.json("attachment", "get", "1", "-o", str(folder))["path"] == str(
        folder / "etc_passwd")
    named = tmp_path / "mine.bin"
    assert hg.json("attachment", "get", "1", "-o", str(named))["size"] == 6
    assert named.read_bytes() == b"file 0"
    code, out, err = hg.run("attachment", "get", "1", "-o", str(folder))
    assert (code, out) == (1, "") and err.startswith("helpgate: error: ")
    assert "exists" in err and err.count("\n") == 1
    code, _, err = hg.run("attachment", "get", "99")
    assert (code, err) == (1, "helpgate: error: no attachment 99\n")


def test_an_attachment_that_was_not_stored_cannot_be_got(hg):
    hg.configure('[mail]\nmax_attachment_size = "2B"\n')
    hg.ingest(hostile_mail())
    code, _, err = hg.run("attachment", "get", "1")
    assert code == 1 and "was not stored" in err and err.count("\n") == 1
