"""The hot statements' quick way (SQLite's cursor) stores and reads what SQLAlchemy would.

On SQLite the statements every message runs skip SQLAlchemy's execution and go to the
driver with the column types' own bind processing (ticketstore/repository.py); on
PostgreSQL they take the ordinary way. Either way a row written through them must read
back as one written by SQLAlchemy: aware UTC times, JSON, cut and cleaned text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from helpgate.ticketstore.models import Comment, Contact, StatusChange, Ticket
from helpgate.ticketstore.repository import (
    _COMMENT_TEXTS,
    _TICKET_BY_NUMBER,
    _on_driver,
    connection,
    defer_writes,
    fetch_all,
    fetch_first,
    fetch_scalar,
    fetch_scalars,
    flush_later,
    get_or_create_contact,
    insert_later,
    insert_returning_id,
    insert_rows,
    json_text,
)

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=timezone(timedelta(hours=3)))


def ticket_values(number: int) -> dict:
    return dict(number=number, subject="Не печатает\x00 принтер", type="incident",
                priority="normal", status="open", channel="email", contact_id=None,
                company_id=None, created_at=NOW, updated_at=NOW, status_changed_at=NOW,
                open_seconds=0.0, open_since=NOW)


def comment_values(ticket_id: int, text: str) -> dict:
    return dict(ticket_id=ticket_id, author_kind="contact", contact_id=None, employee_id=None,
                public=True, channel="email", text=text, inbound_id=None,
                message_id="<m@client.example>", email_from="x" * 600,
                email_to=["support@helpgate.localhost"], email_cc=[],
                email_date="Mon, 23 Nov 2026 10:00:00 +0300",
                headers={"content-type": "text/plain; charset=utf-8"}, created_at=NOW,
                decision={"action": "new_ticket", "rules": ["a"], "notes": ["ё"]})


async def test_rows_written_the_quick_way_read_back_as_sqlalchemy_writes_them(store):
    def work(session):
        ticket_id = insert_returning_id(session, Ticket, ticket_values(1))
        first = insert_returning_id(session, Comment, comment_values(ticket_id, "Первый"))
        second = insert_returning_id(session, Comment, comment_values(ticket_id, "Второй"))
        quick = _on_driver(connection(session), _COMMENT_TEXTS, {"ticket_id": ticket_id},
                           rows=True)
        return ticket_id, first, second, quick is not None, connection(session).dialect.name

    ticket_id, first, second, quick, dialect = await store.run(work)
    assert quick == (dialect == "sqlite")
    assert second == first + 1

    def read(session):
        ticket = session.get(Ticket, ticket_id)
        comment = session.get(Comment, first)
        return (ticket.subject, ticket.created_at, comment.public, comment.email_from,
                comment.email_to, comment.headers, comment.decision, comment.created_at,
                fetch_scalars(session, _COMMENT_TEXTS, {"ticket_id": ticket_id}),
                fetch_all(session, _COMMENT_TEXTS, {"ticket_id": ticket_id}),
                fetch_scalar(session, select(Comment.text).where(Comment.id == -1), {}),
                fetch_first(session, _TICKET_BY_NUMBER, {"number": 1}))

    subject, created, public, sender, to, headers, decision, at, texts, rows, none, row = \
        await store.run(read)
    # A row read the quick way: by name and position, its times aware, as SQLAlchemy's.
    assert (row.id, row.number, row.subject) == (ticket_id, 1, "Не печатает принтер")
    assert row.created_at == NOW and row.created_at.tzinfo is not None
    assert row.closed_at is None and row[1] == 1
    assert subject == "Не печатает принтер"  # NUL taken out (CleanText)
    assert created == NOW and created.tzinfo is not None and at == NOW
    assert public is True
    assert sender == "x" * 500  # cut to the column (Bounded)
    assert (to, headers) == (["support@helpgate.localhost"],
                             {"content-type": "text/plain; charset=utf-8"})
    assert decision == {"action": "new_ticket", "rules": ["a"], "notes": ["ё"]}
    assert texts == ["Второй", "Первый"]
    assert [tuple(row) for row in rows] == [("Второй",), ("Первый",)]
    assert none is None


async def test_rows_inserted_in_one_go_read_back_as_sqlalchemy_writes_them(store):
    # A list of rows goes to the driver's executemany on SQLite, each row converted by
    # the column types as SQLAlchemy converts it; rows whose keys differ take its way.
    def work(session):
        ticket_id = insert_returning_id(session, Ticket, ticket_values(1))
        insert_rows(session, Comment, [comment_values(ticket_id, "Первый"),
                                       comment_values(ticket_id, "Второй\x00")])
        insert_rows(session, StatusChange, [
            dict(ticket_id=ticket_id, from_status=None, to_status="open", at=NOW,
                 reason="r" * 300),
            dict(ticket_id=ticket_id, to_status="resolved", at=NOW, reason="done",
                 from_status="open")])
        defer_writes(session)
        insert_later(session, Contact, [
            dict(email="anna@example.com", name="Anna", created_at=NOW),
            dict(email="anna@example.com", name="Anna again", created_at=NOW)],
            conflict=("email",))
        flush_later(session)
        return ticket_id

    ticket_id = await store.run(work)

    def read(session):
        comments = session.scalars(select(Comment).order_by(Comment.id)).all()
        changes = session.scalars(select(StatusChange).order_by(StatusChange.id)).all()
        return ([(c.ticket_id, c.text, c.email_from, c.email_to, c.headers, c.decision,
                  c.created_at, c.public) for c in comments],
                [(c.from_status, c.to_status, c.at, c.reason) for c in changes],
                session.scalars(select(Contact.name)).all())

    comments, changes, contacts = await store.run(read)
    assert comments == [(ticket_id, text, "x" * 500, ["support@helpgate.localhost"],
                         {"content-type": "text/plain; charset=utf-8"},
                         {"action": "new_ticket", "rules": ["a"], "notes": ["ё"]}, NOW, True)
                        for text in ("Первый", "Второй")]
    assert changes == [(None, "open", NOW, "r" * 200), ("open", "resolved", NOW, "done")]
    assert contacts == ["Anna"]  # the second row's key existed: skipped, not an error


async def test_a_contact_made_twice_is_one_row(store):
    def work(session):
        first = get_or_create_contact(session, "Anna@Example.com", "Anna", None, NOW)
        session.info.clear()
        again = get_or_create_contact(session, "anna@example.com", "Anna", None, NOW)
        return first, again, session.scalars(select(Contact.email)).all()

    first, again, emails = await store.run(work)
    assert first.id == again.id
    assert emails == ["anna@example.com"]


async def test_with_database_echo_every_statement_takes_the_logged_way(tmp_path):
    from helpgate.ticketstore.repository import Store
    store = Store(f"sqlite:///{tmp_path / 'echo.db'}", echo=True)
    try:
        await store.ensure_schema()
        quick = await store.run(lambda session: _on_driver(
            connection(session), _COMMENT_TEXTS, {"ticket_id": 1}, rows=True))
    finally:
        await store.close()
    assert quick is None


@pytest.mark.parametrize("value", [
    {"action": "comment", "notes": ["Ёлка: kept 46 of 281 characters"], "n": 1.5},
    ["support@helpgate.localhost"], {}, None,
    {"x-mailer": "\udcd0\udcbf 8-bit bytes left undecoded"},  # orjson refuses: json.dumps
    {1: "a key that is not a string"}, {"big": 2 ** 70},
])
def test_json_columns_on_sqlite_read_back_as_json_dumps_wrote_them(value):
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_json_columns_refuse_what_json_dumps_refuses():
    with pytest.raises(TypeError):
        json_text({"at": NOW})
