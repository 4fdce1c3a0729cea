"""The ticket store: engine and transactions, the rules' Directory, and the writes.

One `Store` per process. Every unit of work runs in one transaction through `Store.run`,
as plain synchronous SQLAlchemy code on the async engine (`run_sync`), so a pipeline step
reads like a script and still never blocks the event loop. SQLite is opened in WAL mode and
write transactions start with BEGIN IMMEDIATE, so a CLI command and a running gateway never
interleave half-made decisions; on PostgreSQL the rows a decision depends on are locked
with SELECT … FOR UPDATE and uniqueness is left to constraints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import namedtuple
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from types import SimpleNamespace
from typing import Any, NamedTuple, TypeVar

import orjson
from sqlalchemy import (
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from helpgate.threading.context import Person, TicketView
from helpgate.threading.directory import ChatTickets, ReplyToken
from helpgate.threading.message import InboundMessage
from helpgate.ticketstore.models import (
    ChannelCursor,
    Comment,
    Company,
    CompanyDomain,
    Contact,
    Counter,
    Employee,
    Identity,
    InboundRaw,
    OutboxMessage,
    StaffToken,
    Ticket,
)
from helpgate.ticketstore.models import (
    InboundMessage as InboundRow,
)

log = logging.getLogger("helpgate.store")
T = TypeVar("T")
ADMIN_ROLE = "admin"


def normalize_url(url: str) -> str:
    """Accept plain and async driver names alike: sqlite:// (and sqlite+aiosqlite://) run
    on the sqlite3 driver, postgresql:// on asyncpg."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite", "sqlite+aiosqlite": "sqlite", "sqlite+pysqlite": "sqlite",
              "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
              "postgresql+psycopg2": "postgresql+asyncpg"}.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def libpq_options(url: str, connect_args: dict) -> tuple[str, dict]:
    """libpq's `?options=-csearch_path=…` (the way admins choose a schema in a URL) as the
    server settings asyncpg takes; asyncpg itself has no `options` argument."""
    parsed = make_url(url)
    options = parsed.query.get("options")
    if not options:
        return url, connect_args
    settings = dict(connect_args.get("server_settings", {}))
    for item in str(options).split():
        name, equals, value = item.removeprefix("-c").partition("=")
        if not (item.startswith("-c") and equals and name):
            raise ValueError(f"database URL: options={options!r}: only -cname=value "
                             "settings are understood")
        settings[name] = value
    return (parsed.difference_update_query(["options"]).render_as_string(hide_password=False),
            {**connect_args, "server_settings": settings})


class Store:
    """The database, and the one way to work with it: `await store.run(work, *args)`.

    PostgreSQL runs on the async engine (asyncpg) and each unit of work through
    `run_sync`. SQLite runs each unit of work whole on one dedicated thread with the
    sqlite3 driver: aiosqlite would hop threads for every statement, which measured at
    less than half the throughput, and SQLite takes one writer at a time anyway.
    """

    def __init__(self, url: str, echo: bool = False,
                 connect_args: dict | None = None) -> None:
        self.url = normalize_url(url)
        self.connect_args = connect_args or {}
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self._thread: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                folder = os.path.dirname(os.path.abspath(parsed.database))
                os.makedirs(folder, exist_ok=True)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="helpgate-db")
            self.sync_engine = create_engine(self.url, echo=echo,
                                             connect_args=self.connect_args,
                                             json_serializer=json_text)
            _sqlite_setup(self.sync_engine)
            self._sync_sessions = sessionmaker(self.sync_engine, expire_on_commit=False)
        else:
            self.url, self.connect_args = libpq_options(self.url, self.connect_args)
            self.engine: AsyncEngine = create_async_engine(self.url, echo=echo,
                                                           connect_args=self.connect_args)
            self.sync_engine = self.engine.sync_engine
            self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._thread is not None:
            await self._in_thread(self.sync_engine.dispose)
            self._thread.shutdown(wait=True)
        else:
            await self.engine.dispose()

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(session, *args)` in one transaction; commit if it returns."""
        if self._thread is not None:
            return await self._in_thread(self._run_sync, work, args)
        async with self.sessions() as session, session.begin():
            return await session.run_sync(work, *args)

    def _run_sync(self, work: Callable[..., T], args: tuple) -> T:
        with self._sync_sessions() as session, session.begin():
            return work(session, *args)

    async def run_connection(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(connection, *args)` on a plain connection in one transaction."""
        if self._thread is not None:
            def run() -> T:
                with self.sync_engine.begin() as connection:
                    return work(connection, *args)
            return await self._in_thread(run)
        async with self.engine.begin() as connection:
            return await connection.run_sync(work, *args)

    async def run_migration(self, work: Callable[..., T], *args: Any) -> T:
        """`run_connection` for schema changes. On SQLite foreign keys are off meanwhile
        (a table is changed by rebuilding it: drop and rename, which enforcement would
        refuse or cascade) and checked before the commit; off only outside a
        transaction, so on the driver's connection before ours begins."""
        if self._thread is None:
            return await self.run_connection(work, *args)

        def run() -> T:
            with self.sync_engine.connect() as connection:
                driver = connection.connection.driver_connection
                driver.execute("PRAGMA foreign_keys=OFF")
                try:
                    with connection.begin():
                        result = work(connection, *args)
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
                    return result
                finally:
                    driver.execute("PRAGMA foreign_keys=ON")
        return await self._in_thread(run)

    async def ensure_schema(self) -> None:
        """Bring the schema to the newest migration (cheap when it already is)."""
        from helpgate.ticketstore.migrations import HEAD, upgrade
        if await self.run_connection(_current_revision) != HEAD:
            await upgrade(self)

    # ---------------------------------------------------------------- inbound messages
    async def keep_raw(self, message: InboundMessage, sender: str | None) -> tuple[int, bool]:
        """Store the raw message on its own, committed (R-TS-5).

        Returns (inbound id, is_duplicate). A duplicate is detected by the database's
        unique key, so two gateway instances receiving the same mail store it once.
        """
        return await self.run(keep_raw, message, sender)


# Options that send what json.dumps refuses (datetimes, dataclasses) to json.dumps, so it
# is refused as before.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_text(value: Any) -> str:
    """A JSON column's text on SQLite. A message writes a dozen JSON values (its comment's
    addresses, headers and decision, its result, outbox headers), and orjson writes them
    several times faster than json.dumps. What orjson refuses (a lone surrogate from
    undecoded 8-bit bytes, a key that is not a string, an integer over 64 bits) goes to
    json.dumps, as before; either text reads back as the same value."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value)


def _sqlite_setup(engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the driver so BEGIN IMMEDIATE below is honoured.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, as PostgreSQL's by default. With
        # NORMAL a power cut may undo the last commits: a mail answered 250 (or flagged
        # read on IMAP) would be gone, an outbox row marked sending would be sent again.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # The write lock up front: a decision read under it cannot go stale before commit.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _current_revision(conn) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def keep_raw(session: Session, message: InboundMessage, sender: str | None) -> tuple[int, bool]:
    """Insert the raw message unless its dedupe key is known: (id, is_duplicate).

    INSERT … ON CONFLICT DO NOTHING keeps the transaction usable when the key exists (a
    second delivery, or another instance that stored it first), on both backends.
    """
    key = message.dedupe_key[:500]
    inserted = insert_ignoring_conflict(session, InboundRow, _raw_row(message, sender),
                                        ("channel", "dedupe_key"), returning="id").scalar()
    if inserted is not None:
        insert_rows_with_blob(session, InboundRaw, [
            {"inbound_id": inserted, "raw": message.raw}], "raw", key="inbound_id")
        return inserted, False
    return _inbound_id_by_key(session, message.channel, key), True


def keep_raw_many(session: Session, messages: list[InboundMessage]) -> list[tuple[int, bool]]:
    """`keep_raw` for a batch: the known keys in one query, the new rows in one multi-row
    insert. A key seen twice in the batch is a duplicate of its first copy, and a key
    another instance stores at the same moment is a duplicate of theirs.
    """
    keys = [(m.channel, m.dedupe_key[:500]) for m in messages]
    known = _inbound_ids_by_keys(session, keys)
    new_rows, raws = [], {}
    seen: set[tuple[str, str]] = set()
    for message, key in zip(messages, keys, strict=True):
        if key not in known and key not in seen:
            seen.add(key)
            new_rows.append(_raw_row(message, message.sender_key))
            raws[key] = message.raw
    ours: dict[tuple[str, str], int] = {}
    if new_rows:
        inserted = insert_ignoring_conflict(session, InboundRow, new_rows,
                                            ("channel", "dedupe_key"),
                                            returning=("id", "channel", "dedupe_key"))
        ours = {(row.channel, row.dedupe_key): row.id for row in inserted}
        insert_rows_with_blob(session, InboundRaw, [
            {"inbound_id": inbound_id, "raw": raws[key]} for key, inbound_id in ours.items()],
            "raw", key="inbound_id")
    theirs = _inbound_ids_by_keys(session, list(seen - ours.keys()))
    kept: list[tuple[int, bool]] = []
    first_copy: set[tuple[str, str]] = set()
    for key in keys:
        if key in ours:
            kept.append((ours[key], key in first_copy))
            first_copy.add(key)
        else:
            kept.append((known.get(key) or theirs[key], True))
    return kept


def _raw_row(message: InboundMessage, sender: str | None) -> dict:
    # The bytes go to inbound_raw (InboundRaw), written once and never rewritten.
    return {"channel": message.channel, "dedupe_key": message.dedupe_key[:500],
            "meta": {}, "received_at": message.received_at,
            "state": "received", "sender": sender}


def _inbound_id_by_key(session: Session, channel: str, key: str) -> int:
    return session.execute(select(InboundRow.id).where(
        InboundRow.channel == channel, InboundRow.dedupe_key == key)).scalar_one()


def _inbound_ids_by_keys(session: Session,
                         keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for part in chunked(sorted({key for _, key in keys})):
        for row in connection(session).execute(_INBOUND_BY_KEYS, {"keys": part}):
            found[(row.channel, row.dedupe_key)] = row.id
    wanted = set(keys)
    return {key: value for key, value in found.items() if key in wanted}


def chunked(values: list, size: int = 500) -> list[list]:
    # Bound the parameters of one IN (...): SQLite and asyncpg both have a limit.
    return [values[i:i + size] for i in range(0, len(values), size)]


def connection(session: Session):
    """The transaction's connection, for Core statements: the Session's own dispatch
    costs more than a small statement on SQLite, and Core statements never autoflush
    anyway. Kept for the transaction: a message runs a dozen statements, and asking the
    Session each time cost several per cent of a batch."""
    transaction = session.get_transaction()
    cached = session.info.get(_CONNECTION)
    if cached is not None and cached[0] is transaction:
        return cached[1]
    db = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), db)
    return db


_CONNECTION = "connection"


# -------------------------------------------------------------------- the rules' view
def ticket_view(ticket) -> TicketView:
    """The view of a Ticket entity or of a row of the tickets table."""
    return TicketView(id=ticket.id, number=ticket.number, status=ticket.status,
                      type=ticket.type, channel=ticket.channel, contact_id=ticket.contact_id,
                      company_id=ticket.company_id, closed_at=ticket.closed_at,
                      subject=ticket.subject, assignee_id=ticket.assignee_id)


def person_of(row, kind: str | None = None) -> Person:
    """A Person from an Employee/Contact entity or from a row of their table."""
    kind = kind or ("employee" if isinstance(row, Employee) else "contact")
    if kind == "employee":
        return Person(kind="employee", id=row.id, email=row.email, name=row.name,
                      role=row.role)
    return Person(kind="contact", id=row.id, email=row.email, name=row.name,
                  company_id=row.company_id)


# The hot path speaks Core to the tables (rows, not ORM entities): on SQLite the ORM's
# bookkeeping costs several times more than the statements themselves. Statements are
# built once: constructing one costs more than running it.
EMPLOYEES = Employee.__table__
CONTACTS = Contact.__table__
INBOUND = InboundRow.__table__
_EMPLOYEE_BY_EMAIL = select(EMPLOYEES).where(EMPLOYEES.c.email == bindparam("email"))
_CONTACT_BY_EMAIL = select(CONTACTS).where(CONTACTS.c.email == bindparam("email"))
_EMPLOYEES_BY_EMAILS = select(EMPLOYEES).where(
    EMPLOYEES.c.email.in_(bindparam("emails", expanding=True)))
_CONTACTS_BY_EMAILS = select(CONTACTS).where(
    CONTACTS.c.email.in_(bindparam("emails", expanding=True)))
DOMAINS = CompanyDomain.__table__
_DOMAIN_OWNER = select(DOMAINS.c.company_id).where(DOMAINS.c.domain == bindparam("domain"))
_DOMAIN_OWNERS = select(DOMAINS.c.domain, DOMAINS.c.company_id).where(
    DOMAINS.c.domain.in_(bindparam("domains", expanding=True)))
TICKETS = Ticket.__table__
_TICKET_BY_NUMBER = select(TICKETS).where(TICKETS.c.number == bindparam("number")) \
    .with_for_update()
_TICKET_BY_ID = select(TICKETS).where(TICKETS.c.id == bindparam("ticket_id")).with_for_update()
# A customer's tickets in one chat: their private chat with the bot (tickets.chat unset)
# or a group's.
# (Two forms each: "chat IS NULL" and "chat = :chat", as a NULL parameter compares to
# nothing.)
_IN_CHAT = {private: and_(TICKETS.c.contact_id == bindparam("contact_id"),
                          TICKETS.c.channel == bindparam("channel"),
                          TICKETS.c.chat.is_(None) if private
                          else TICKETS.c.chat == bindparam("chat"))
            for private in (True, False)}
# At most this many open tickets are offered as buttons.
CHAT_CHOICES = 5
_IDENTITIES = Identity.__table__
_CHAT_TICKETS: dict[tuple[bool, tuple[str, ...]], Any] = {}


def _chat_tickets_statement(private: bool, statuses: tuple[str, ...]):
    """One query for rule conversation (it runs for every chat message): the chat's open
    tickets, its latest and the one the sender chose, each flagged; built once per form
    and status list."""
    key = (private, statuses)
    if key not in _CHAT_TICKETS:
        newest = TICKETS.alias("newest")
        latest = select(func.max(newest.c.id)).where(
            newest.c.contact_id == bindparam("contact_id"),
            newest.c.channel == bindparam("channel"),
            newest.c.chat.is_(None) if private else newest.c.chat == bindparam("chat")
        ).scalar_subquery()
        chosen = select(_IDENTITIES.c.ticket_id).where(
            _IDENTITIES.c.kind == "contact", _IDENTITIES.c.channel == bindparam("channel"),
            _IDENTITIES.c.external_id == bindparam("external_id")).scalar_subquery()
        is_latest = (TICKETS.c.id == latest).label("is_latest")
        is_chosen = (TICKETS.c.id == chosen).label("is_chosen")
        # Plain comparisons, not IN: the statement stays one the driver runs directly.
        is_open = or_(*(TICKETS.c.status == status for status in statuses)) \
            if statuses else false()
        _CHAT_TICKETS[key] = select(TICKETS, is_latest, is_chosen).where(
            _IN_CHAT[private], or_(is_open, TICKETS.c.id == latest, TICKETS.c.id == chosen)
        ).order_by(is_chosen.desc(), is_latest.desc(), TICKETS.c.updated_at.desc(),
                   TICKETS.c.id.desc()).limit(CHAT_CHOICES + 2).with_for_update(of=TICKETS)
    return _CHAT_TICKETS[key]
_CHAT_COMPANY = select(_IDENTITIES.c.company_id).where(
    _IDENTITIES.c.kind == "company", _IDENTITIES.c.channel == bindparam("channel"),
    _IDENTITIES.c.external_id == bindparam("chat"))
_INBOUND_BY_KEYS = select(INBOUND.c.id, INBOUND.c.channel, INBOUND.c.dedupe_key).where(
    INBOUND.c.dedupe_key.in_(bindparam("keys", expanding=True)))
# The history a reply on a ticket may quote (quote stripping, R-TH-2): the latest
# HISTORY_LIMIT comments and outgoing messages are enough for any quote a client keeps.
HISTORY_LIMIT = 50
_COMMENT_TEXTS = (select(Comment.text).where(Comment.ticket_id == bindparam("ticket_id"))
                  .order_by(Comment.id.desc()).limit(HISTORY_LIMIT))
_OUTBOX_TEXTS = (select(OutboxMessage.subject, OutboxMessage.text)
                 .where(OutboxMessage.ticket_id == bindparam("ticket_id"))
                 .order_by(OutboxMessage.id.desc()).limit(HISTORY_LIMIT))
_SENDER_COUNT = select(func.count()).select_from(INBOUND).where(
    INBOUND.c.sender == bindparam("sender"), INBOUND.c.received_at >= bindparam("since"),
    INBOUND.c.state != "received")
# Advisory lock space of the throttle (first key), then the sender's hash.
THROTTLE_LOCK = 7301
_SENDER_LOCK = text(f"SELECT pg_advisory_xact_lock({THROTTLE_LOCK}, hashtext(:sender))")
_COMMENT_TICKET_BY_IDS = select(Comment.__table__.c.ticket_id).where(
    Comment.__table__.c.message_id.in_(bindparam("ids", expanding=True))
).order_by(Comment.__table__.c.id.desc()).limit(1)
_OUTBOX_TICKET_BY_IDS = select(OutboxMessage.__table__.c.ticket_id).where(
    OutboxMessage.__table__.c.message_id.in_(bindparam("ids", expanding=True)),
    OutboxMessage.__table__.c.ticket_id.is_not(None)
).order_by(OutboxMessage.__table__.c.id.desc()).limit(1)
COMPANIES = Company.__table__
_COMPANY_NAME = select(COMPANIES.c.name).where(COMPANIES.c.id == bindparam("id"))
_COMPANY_NAMES_BY_IDS = select(COMPANIES.c.id, COMPANIES.c.name).where(
    COMPANIES.c.id.in_(bindparam("ids", expanding=True)))
_COMPANY_NAMES = "company_names"
_TOKEN_BY_VALUE = select(StaffToken.__table__).where(
    StaffToken.__table__.c.token == bindparam("token"))
_TICKET_NUMBER = (update(Counter.__table__).where(Counter.__table__.c.name == "ticket")
                  .values(value=Counter.__table__.c.value + 1)
                  .returning(Counter.__table__.c.value))


def insert_returning_id(session: Session, model, values: dict) -> int:
    """INSERT one row through Core and return its id."""
    db = connection(session)
    statement = _insert_with_id(model.__table__)
    cursor = _on_driver(db, statement, values)
    if cursor is None:
        return db.execute(statement, values).scalar_one()
    return cursor.fetchone()[0]


def inserted_row(model, values: dict, row_id: int) -> SimpleNamespace:
    """A row just written through Core as an object with every column of the table as an
    attribute (None where not given, as on a new entity), without an ORM entity's cost:
    for code that only reads what was written (notifications, results)."""
    return SimpleNamespace(**{**_column_keys(model.__table__), **values, "id": row_id})


@lru_cache(maxsize=32)
def _column_keys(table) -> dict[str, None]:
    return dict.fromkeys(column.key for column in table.columns)


def execute(session: Session, statement, values: dict) -> None:
    """Run a statement whose result nobody reads (an UPDATE), the quick way when it can."""
    db = connection(session)
    if _on_driver(db, statement, values) is None:
        db.execute(statement, values)


def fetch_all(session: Session, statement, values: dict) -> list:
    """The rows of a SELECT (by position and by column name), the quick way when it can."""
    db = connection(session)
    found = _on_driver(db, statement, values, rows=True)
    if found is None:
        return db.execute(statement, values).all()
    cursor, make = found
    return [make(row) for row in cursor.fetchall()]


def fetch_first(session: Session, statement, values: dict):
    """The first row of a SELECT, or None."""
    db = connection(session)
    found = _on_driver(db, statement, values, rows=True)
    if found is None:
        return db.execute(statement, values).first()
    cursor, make = found
    row = cursor.fetchone()
    return make(row) if row is not None else None


def fetch_scalars(session: Session, statement, values: dict) -> list:
    """The first column of a SELECT's rows."""
    return [row[0] for row in fetch_all(session, statement, values)]


def fetch_scalar(session: Session, statement, values: dict):
    """The first column of a SELECT's first row, or None."""
    row = fetch_first(session, statement, values)
    return row[0] if row is not None else None


# On SQLite the statements every message runs go to the driver's cursor: SQLAlchemy's
# execution of a small statement costs several times what SQLite takes to run it (an
# INSERT of a comment measured 137 µs through Connection.execute, 48 µs on the cursor
# with the same bind processing). SQLAlchemy still compiles each statement, once, and
# values and rows are converted by the column types' own bind and result processors. A
# statement that needs more (values computed by Python-side defaults, expanding IN
# lists) and every statement on PostgreSQL take the ordinary way.
class _Compiled(NamedTuple):
    statement: Any  # held, so that the id the cache is keyed by stays its own
    compiled: Any  # SQLAlchemy's compiled form, or None: not for the driver
    processors: tuple
    make_row: Callable | None  # a raw row of a SELECT -> a row as SQLAlchemy gives it
    # Every parameter comes from the values given (none is a literal of the statement):
    # they are read straight from the dict, without SQLAlchemy's construct_params.
    direct: bool = False
    # The parameters' values in order, out of the dict (operator.itemgetter, in C).
    pick: Callable[[dict], tuple] = tuple


_DRIVER: dict[tuple, _Compiled] = {}
_DRIVER_MAX = 512


def _on_driver(db, statement, values: dict, rows: bool = False):
    """None (run it the ordinary way), or the driver's cursor after running `statement`;
    with `rows`, (the cursor, what makes its rows)."""
    cached = _driver_form(db, statement, tuple(values), rows)
    if cached is None:
        return None
    cursor = db.connection.dbapi_connection.execute(cached.compiled.string,
                                                    _driver_params(cached, values))
    return (cursor, cached.make_row) if rows else cursor


def _many_on_driver(db, statement, rows: list[dict]) -> bool:
    """Run `statement` (no RETURNING) once per row through the driver's executemany,
    the way `_on_driver` runs one; False when it must take SQLAlchemy's way. SQLAlchemy
    executes a list of rows with the same executemany, after work per row that costs
    more than SQLite's."""
    keys = tuple(rows[0])
    if any(tuple(row) != keys for row in rows):  # then SQLAlchemy sorts out each row
        return False
    cached = _driver_form(db, statement, keys, False)
    if cached is None:
        return False
    db.connection.dbapi_connection.executemany(
        cached.compiled.string, [_driver_params(cached, row) for row in rows])
    return True


def _driver_form(db, statement, keys: tuple, rows: bool) -> _Compiled | None:
    """The statement compiled for the driver with these parameter names, or None."""
    dialect = db.dialect
    if dialect.name != "sqlite" or dialect.driver != "pysqlite" \
            or dialect.paramstyle != "qmark" or db.engine.echo:  # database.echo logs each
        return None
    key = (id(statement), rows, keys)
    cached = _DRIVER.get(key)
    if cached is None or cached.statement is not statement:
        cached = _compile_for_driver(statement, dialect, list(keys), rows)
        if len(_DRIVER) < _DRIVER_MAX:  # the hot statements are few and built once
            _DRIVER[key] = cached
    return cached if cached.compiled is not None else None


def _driver_params(cached: _Compiled, values: dict) -> tuple:
    params = values if cached.direct else cached.compiled.construct_params(values)
    # A list comprehension over the picked values: a dozen parameters per statement and a
    # dozen statements per message make this loop count.
    return tuple([value if process is None else process(value)
                  for value, process in zip(cached.pick(params), cached.processors,
                                            strict=True)])


def _compile_for_driver(statement, dialect, keys: list[str], rows: bool) -> _Compiled:
    not_here = _Compiled(statement, None, (), None)
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    if compiled.positiontup is None or any(getattr(compiled, name, None) for name in (
            "insert_prefetch", "update_prefetch", "postfetch", "post_compile_params",
            "literal_execute_params", "escaped_bind_names")):
        return not_here
    make_row = None
    if rows:
        columns = list(getattr(statement, "selected_columns", ()))
        try:
            row_type = namedtuple("Row", [column.key for column in columns])
        except (TypeError, ValueError):  # no columns, or names a tuple cannot have
            return not_here
        converters = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                      for column in columns]
        if any(converters):
            def make_row(raw, converters=converters, make=row_type._make):
                return make([value if convert is None else convert(value)
                             for value, convert in zip(raw, converters, strict=True)])
        else:
            make_row = row_type._make
    binds = compiled.binds
    names = compiled.positiontup
    return _Compiled(statement, compiled, tuple(
        binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in names), make_row,
        direct=set(names) <= set(keys), pick=_picker(names))


def _picker(names: list[str]) -> Callable[[dict], tuple]:
    if len(names) == 1:  # itemgetter of one name gives the value, not a tuple
        name = names[0]
        return lambda params: (params[name],)
    return itemgetter(*names) if names else lambda params: ()


@lru_cache(maxsize=32)
def _insert_with_id(table):
    return insert(table).returning(table.c.id)


def insert_rows(session: Session, model, rows: list[dict]) -> None:
    if rows:
        _insert_many(session, _insert(model.__table__), rows)


def _insert_many(session: Session, statement, rows: list[dict]) -> None:
    db = connection(session)
    if not _many_on_driver(db, statement, rows):
        db.execute(statement, rows)


# Above this size a blob goes into SQLite through incremental blob I/O: a bound parameter
# is copied twice inside SQLite (the binding and the record), which for a 30 MB
# attachment costs 60 MB of memory; written in chunks it costs one chunk.
LARGE_BLOB = 1 << 20
_BLOB_CHUNK = 1 << 20


def insert_rows_with_blob(session: Session, model, rows: list[dict], column: str,
                          key: str = "id") -> None:
    """`insert_rows`, writing large values of `column` in chunks (see LARGE_BLOB).
    `key` is the table's integer primary key (SQLite's rowid), given or generated."""
    small = []
    for row in rows:
        row, large = _blob_out(session, row, column)
        if large is None:
            small.append(row)
        else:
            row_id = connection(session).execute(
                _insert_zeroblob(model.__table__, column, key), row).scalar_one()
            write_blob(session, model.__table__, column, row_id, large)
    insert_rows(session, model, small)


def _blob_out(session: Session, row: dict, column: str) -> tuple[dict, bytes | None]:
    """The row with a large blob taken out (on SQLite), and that blob: the row is then
    inserted with zeroblob(BLOB_SIZE) in its place and written by write_blob. An INSERT
    reserves that space without writing it only when the blob is the record's last
    column, and any later UPDATE of the row would rewrite it whole: so blobs live last,
    in rows nothing updates (inbound_raw, attachments)."""
    data = row.get(column)
    if data is None or len(data) <= LARGE_BLOB or connection(session).dialect.name != "sqlite":
        return row, None
    return {k: v for k, v in row.items() if k != column} | {BLOB_SIZE: len(data)}, data


BLOB_SIZE = "blob_size"


@lru_cache(maxsize=8)
def _insert_zeroblob(table, column: str, key: str):
    return insert(table).values({column: func.zeroblob(bindparam(BLOB_SIZE))}) \
        .returning(table.c[key])


def write_blob(session: Session, table, column: str, row_id: int, data: bytes) -> None:
    """Put `data` into the space a row reserved, through SQLite's incremental blob I/O."""
    raw_connection = connection(session).connection.dbapi_connection
    view = memoryview(data)
    with raw_connection.blobopen(table.name, column, row_id) as blob:
        for start in range(0, len(view), _BLOB_CHUNK):
            blob.write(view[start:start + _BLOB_CHUNK])


# Rows nothing in the rest of a batch reads back (status history, outbox rows) can wait
# for the end of the batch and go in as one multi-row insert per table.
_DEFERRED = "deferred_rows"
_DEFERRED_BY_TICKET = "deferred_rows_by_ticket"


def defer_writes(session: Session) -> None:
    """From now on, `insert_later` collects rows until `flush_later` (a batch)."""
    session.info[_DEFERRED] = {}
    session.info[_DEFERRED_BY_TICKET] = {}


def insert_later(session: Session, model, rows: list[dict],
                 conflict: tuple[str, ...] | None = None) -> None:
    """Insert rows now, or at the end of the batch when `defer_writes` is on. With
    `conflict`, rows whose unique key exists are skipped (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    deferred = session.info.get(_DEFERRED)
    if deferred is None:
        _insert_now(session, model, rows, conflict)
    else:
        deferred.setdefault((model, conflict), []).extend(rows)
        by_ticket = session.info[_DEFERRED_BY_TICKET]
        for row in rows:
            if row.get("ticket_id") is not None:
                by_ticket.setdefault((model, row["ticket_id"]), []).append(row)


def pending_rows(session: Session, model, ticket_id: int | None = None) -> list[dict]:
    """Rows `insert_later` holds for `model` (of one ticket, when given) that are not in
    the database yet, in the order they were added. By ticket from an index: a batch
    asks once per reply, and scanning all its rows each time grew with the batch."""
    if ticket_id is not None:
        return list((session.info.get(_DEFERRED_BY_TICKET) or {}).get((model, ticket_id), ()))
    deferred = session.info.get(_DEFERRED) or {}
    return [row for (kind, _), rows in deferred.items() if kind is model for row in rows]


def flush_later(session: Session) -> None:
    """Write what `insert_later` collected; before a read of those tables, and at the end."""
    deferred = session.info.get(_DEFERRED)
    if deferred:
        for (model, conflict), rows in list(deferred.items()):
            _insert_now(session, model, rows, conflict)
        deferred.clear()
        session.info[_DEFERRED_BY_TICKET].clear()
    _write_ticket_number(session)


def _insert_now(session: Session, model, rows: list[dict],
                conflict: tuple[str, ...] | None) -> None:
    if conflict:
        _insert_many(session, _insert_ignore(
            connection(session).dialect.name, model.__table__, conflict, None), rows)
    else:
        insert_rows(session, model, rows)


@lru_cache(maxsize=32)
def _insert(table):
    return insert(table)


class SessionDirectory:
    """The threading rules' Directory over a session, inside the decision's transaction.

    Tickets are read as rows through Core, locked (FOR UPDATE on PostgreSQL; SQLite's
    transaction holds the write lock already); `settle` turns a row that owes a timer into
    an updated Ticket entity.
    """

    def __init__(self, session: Session, settle: Callable[[Any], Any] | None = None) -> None:
        self.session = session
        # Brings a found ticket up to date (timers it is owed) before rules see it.
        self.settle = settle
        # Transaction-wide answers (a batch shares them; see prefetch_directory).
        self._people: dict[str, Person | None] = session.info.setdefault("people", {})
        self._domains: dict[str, int | None] = session.info.setdefault("domains", {})

    def _view(self, ticket) -> TicketView | None:
        if ticket is None:
            return None
        if self.settle is not None:
            ticket = self.settle(ticket)
        return ticket_view(ticket)

    def ticket_by_number(self, number: int) -> TicketView | None:
        return self._view(fetch_first(self.session, _TICKET_BY_NUMBER, {"number": number}))

    def ticket_by_message_ids(self, message_ids: list[str]) -> TicketView | None:
        ids = [m[:500] for m in message_ids]
        db = connection(self.session)
        ticket_id = db.scalar(_COMMENT_TICKET_BY_IDS, {"ids": ids})
        if ticket_id is None:
            # Outbox rows this batch has queued (the newest) count too.
            wanted = set(ids)
            ticket_id = next((row["ticket_id"] for row in
                              reversed(pending_rows(self.session, OutboxMessage))
                              if row["message_id"] in wanted and row["ticket_id"]), None)
        if ticket_id is None:
            ticket_id = db.scalar(_OUTBOX_TICKET_BY_IDS, {"ids": ids})
        if ticket_id is None:
            return None
        return self._view(fetch_first(self.session, _TICKET_BY_ID, {"ticket_id": ticket_id}))

    def chat_tickets(self, contact_id: int, channel: str, sender_id: str | None,
                     chat: str | None, open_statuses: list[str]) -> ChatTickets:
        statement = _chat_tickets_statement(chat is None, tuple(open_statuses))
        rows = fetch_all(self.session, statement, {
            "contact_id": contact_id, "channel": channel, "external_id": sender_id or "",
            **({"chat": chat} if chat is not None else {})})
        views = {row.id: self._view(row) for row in rows}
        recent = sorted(rows, key=lambda row: (row.updated_at, row.id), reverse=True)
        return ChatTickets(
            chosen=next((views[row.id] for row in rows if row.is_chosen), None),
            latest=next((views[row.id] for row in rows if row.is_latest), None),
            open=tuple(views[row.id] for row in recent
                       if views[row.id].status in open_statuses)[:CHAT_CHOICES])

    def company_by_chat(self, channel: str, chat: str) -> int | None:
        return connection(self.session).scalar(_CHAT_COMPANY,
                                               {"channel": channel, "chat": chat})

    def outbox_id_by_message_id(self, message_id: str) -> int | None:
        flush_later(self.session)
        return self.session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.message_id == message_id[:500]))

    def person_by_email(self, email: str) -> Person | None:
        # Several rules ask about the same sender: one lookup per decision.
        email = email.lower()
        if email not in self._people:
            db = connection(self.session)
            employee = db.execute(_EMPLOYEE_BY_EMAIL, {"email": email}).first()
            if employee is not None:
                self._people[email] = person_of(employee, "employee")
            else:
                contact = db.execute(_CONTACT_BY_EMAIL, {"email": email}).first()
                self._people[email] = (person_of(contact, "contact")
                                       if contact is not None else None)
        return self._people[email]

    def person_by_identity(self, channel: str, external_id: str) -> Person | None:
        if channel == "email":
            return self.person_by_email(external_id)
        key = identity_key(channel, external_id)
        if key not in self._people:
            self._people[key] = _person_by_identity(connection(self.session), channel,
                                                    external_id)
        return self._people[key]

    def company_by_domain(self, domain: str) -> int | None:
        domain = domain.lower()
        if domain not in self._domains:
            self._domains[domain] = connection(self.session).scalar(
                _DOMAIN_OWNER, {"domain": domain})
        return self._domains[domain]

    def earliest_admin(self) -> Person | None:
        # Asked for most unknown senders: once per transaction (a batch shares it).
        if "earliest_admin" not in self.session.info:
            admin = fetch_first(self.session, _EARLIEST_ADMIN, {})
            self.session.info["earliest_admin"] = person_of(admin, "employee") \
                if admin else None
        return self.session.info["earliest_admin"]

    def messages_from_since(self, sender: str, since: datetime) -> int:
        """This message and the sender's messages decided since `since`.

        Counted under a per-sender lock held to the end of the transaction (PostgreSQL's
        advisory lock; SQLite's write lock already serialises): two instances deciding
        the same sender's mail take turns, so a limit holds across instances. Messages
        earlier in the same batch count through a transaction-local tally, since their
        rows are still undecided until the batch ends.
        """
        sender = sender[:320]
        tally: dict[str, int] = self.session.info.setdefault("sender_tally", {})
        if sender not in tally:
            lock_senders(self.session, [sender])
            tally[sender] = connection(self.session).scalar(
                _SENDER_COUNT, {"sender": sender, "since": since}) or 0
        tally[sender] += 1
        return tally[sender]

    def reply_token(self, token: str) -> ReplyToken | None:
        flush_later(self.session)  # a token issued earlier in this batch counts too
        row = connection(self.session).execute(_TOKEN_BY_VALUE,
                                               {"token": token.lower()}).first()
        if row is None:
            return None
        return ReplyToken(ticket_id=row.ticket_id, employee_id=row.employee_id,
                          revoked=row.revoked_at is not None)

    def ticket_history(self, ticket_id: int) -> list[str]:
        comments = fetch_scalars(self.session, _COMMENT_TEXTS, {"ticket_id": ticket_id})
        # What this batch has queued so far counts too, read where it waits.
        sent = [(row["subject"], row["text"])
                for row in pending_rows(self.session, OutboxMessage, ticket_id)][::-1]
        sent += fetch_all(self.session, _OUTBOX_TEXTS, {"ticket_id": ticket_id})
        return [*comments, *(text for row in sent[:HISTORY_LIMIT] for text in row if text)]


def lock_senders(session: Session, senders: list[str | None]) -> None:
    """Take the per-sender throttle locks, in one order, so two instances' batches that
    share senders can never wait on each other in a circle."""
    db = connection(session)
    if db.dialect.name != "postgresql":
        return
    for sender in sorted({s[:320] for s in senders if s}):
        db.execute(_SENDER_LOCK, {"sender": sender})


def prefetch_directory(session: Session, senders: list[tuple[str, str] | None]) -> None:
    """Answer the rules' sender and domain questions for a whole batch (its senders'
    identities) up front: a few queries per batch instead of up to three per message.
    The answers live as long as the transaction; a contact created in it is added by
    `get_or_create_contact`."""
    people: dict[str, Person | None] = session.info.setdefault("people", {})
    domains: dict[str, int | None] = session.info.setdefault("domains", {})
    emails = sorted({i.lower() for c, i in filter(None, senders) if c == "email"}
                    - people.keys())
    db = connection(session)
    others = sorted({(c, i) for c, i in filter(None, senders) if c != "email"
                     and identity_key(c, i) not in people})
    for channel, external_id in others:
        people[identity_key(channel, external_id)] = _person_by_identity(db, channel,
                                                                        external_id)
    for part in chunked(emails):
        for row in db.execute(_EMPLOYEES_BY_EMAILS, {"emails": part}):
            people[row.email] = person_of(row, "employee")
        for row in db.execute(_CONTACTS_BY_EMAILS, {"emails": part}):
            people.setdefault(row.email, person_of(row, "contact"))
    for email in emails:
        people.setdefault(email, None)
    wanted = sorted({e.rsplit("@", 1)[1] for e in emails if "@" in e} - domains.keys())
    for part in chunked(wanted):
        for row in db.execute(_DOMAIN_OWNERS, {"domains": part}):
            domains[row.domain] = row.company_id
    for domain in wanted:
        domains.setdefault(domain, None)
    # The names of their companies, for the notifications' "who wrote" line.
    names: dict[int, str | None] = session.info.setdefault(_COMPANY_NAMES, {})
    companies = sorted(({p.company_id for p in people.values() if p and p.company_id}
                        | {c for c in domains.values() if c}) - names.keys())
    for part in chunked(companies):
        for row in db.execute(_COMPANY_NAMES_BY_IDS, {"ids": part}):
            names[row.id] = row.name


def company_name(session: Session, company_id: int) -> str | None:
    """A company's name, asked once per transaction (a batch prefetches its senders')."""
    names: dict[int, str | None] = session.info.setdefault(_COMPANY_NAMES, {})
    if company_id not in names:
        names[company_id] = fetch_scalar(session, _COMPANY_NAME, {"id": company_id})
    return names[company_id]


# ------------------------------------------------------------------------- the writes
def insert_ignoring_conflict(session: Session, model, rows: dict | list[dict],
                             conflict: tuple[str, ...],
                             returning: str | tuple[str, ...] | None = None):
    """INSERT … ON CONFLICT DO NOTHING on both backends: another instance may have
    written the same row first; the unique key decides and nobody fails."""
    db = connection(session)
    return db.execute(_insert_ignore(db.dialect.name, model.__table__, conflict, returning),
                      rows)


@lru_cache(maxsize=32)
def _insert_ignore(dialect: str, table, conflict: tuple[str, ...],
                   returning: str | tuple[str, ...] | None):
    builder = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = builder(table).on_conflict_do_nothing(index_elements=list(conflict))
    if not returning:
        return statement
    names = (returning,) if isinstance(returning, str) else returning
    return statement.returning(*(table.c[name] for name in names))


def _inserted_id(session: Session, model, row: dict, conflict: tuple[str, ...]) -> int | None:
    """`insert_ignoring_conflict` of one row: its new id, or None when the key existed."""
    db = connection(session)
    statement = _insert_ignore(db.dialect.name, model.__table__, conflict, "id")
    cursor = _on_driver(db, statement, row)
    if cursor is None:
        return db.execute(statement, row).scalar()
    found = cursor.fetchone()
    return found[0] if found is not None else None


def next_ticket_number(session: Session) -> int:
    """The next ticket number; the counter row's lock serializes concurrent instances.

    In a batch (`defer_writes`) only the first number is taken from the counter: that
    UPDATE holds the row's lock (PostgreSQL; SQLite's write lock) to the commit, so the
    numbers after it are the batch's alone and are counted here, and `flush_later`
    writes the last one back. The counter ends where one UPDATE per ticket left it."""
    held = session.info.get(_NUMBERS)
    if held is not None:
        held[0] += 1
        return held[0]
    number = connection(session).execute(_TICKET_NUMBER).scalar()
    if number is None:
        insert_ignoring_conflict(session, Counter, {"name": "ticket", "value": 0}, ("name",))
        return next_ticket_number(session)
    if session.info.get(_DEFERRED) is not None:
        session.info[_NUMBERS] = [number, number]  # handed out, written
    return number


# session.info: the batch's ticket numbers (next_ticket_number), written by flush_later.
_NUMBERS = "ticket_numbers"
_SET_TICKET_NUMBER = (update(Counter.__table__).where(Counter.__table__.c.name == "ticket")
                      .values(value=bindparam("value")))


def _write_ticket_number(session: Session) -> None:
    held = session.info.get(_NUMBERS)
    if held is not None and held[0] != held[1]:
        connection(session).execute(_SET_TICKET_NUMBER, {"value": held[0]})
        held[1] = held[0]


def get_or_create_contact(session: Session, email: str, name: str | None,
                          company_id: int | None, now: datetime) -> Person:
    """The contact with this address, created if none exists (another instance may be
    creating it at the same moment: the unique key decides, and both get the same row)."""
    email = email.lower()
    new_id = _inserted_id(session, Contact, {"email": email, "name": name,
                                             "company_id": company_id, "created_at": now},
                          ("email",))
    if new_id is not None:
        person = Person(kind="contact", id=new_id, email=email, name=name,
                        company_id=company_id)
    else:
        person = person_of(connection(session).execute(_CONTACT_BY_EMAIL,
                                                        {"email": email}).first(), "contact")
    # The rest of the transaction (the batch) must know this sender now.
    session.info.setdefault("people", {})[email] = person
    return person


def get_or_create_contact_for(session: Session, channel: str, external_id: str,
                              email: str | None, name: str | None, company_id: int | None,
                              now: datetime) -> Person:
    """The contact who is `external_id` on `channel`, created with that identity if none
    is (another instance may be creating it at the same moment: the identity's unique
    key decides, and the loser's new contact goes again)."""
    if channel == "email":
        return get_or_create_contact(session, external_id, name, company_id, now)
    db = connection(session)
    found = _person_by_identity(db, channel, external_id, kind="contact")
    if found is None:
        # The address they gave, unless a contact has it (then bind() made them that one).
        email = email.strip().lower() if email and "@" in email else None
        if email and db.execute(_CONTACT_BY_EMAIL, {"email": email}).first() is not None:
            email = None
        contact_id = insert_returning_id(session, Contact, {
            "email": email, "name": name, "company_id": company_id, "created_at": now})
        added = insert_ignoring_conflict(session, Identity, {
            "kind": "contact", "channel": channel, "external_id": external_id[:255],
            "contact_id": contact_id, "created_at": now},
            ("kind", "channel", "external_id"), returning="id").scalar()
        if added is None:
            db.execute(delete(CONTACTS).where(CONTACTS.c.id == contact_id))
            found = _person_by_identity(db, channel, external_id, kind="contact")
        else:
            found = Person(kind="contact", id=contact_id, email=email, name=name,
                           company_id=company_id)
    session.info.setdefault("people", {})[identity_key(channel, external_id)] = found
    return found


def reachable_again(session: Session, channel: str, external_id: str) -> None:
    """They wrote from the channel: it delivers to them again (they unblocked the bot)."""
    execute(session, _REACHABLE_AGAIN, {"on_channel": channel, "id_there": external_id[:255]})


def identity_key(channel: str, external_id: str) -> str:
    """How a non-mail identity is cached beside addresses (which contain no "id:")."""
    return f"{channel}:id:{external_id}"


_IDENTITIES = Identity.__table__
_EMPLOYEE_BY_IDENTITY = select(EMPLOYEES).join(
    _IDENTITIES, _IDENTITIES.c.employee_id == EMPLOYEES.c.id).where(
    _IDENTITIES.c.kind == "employee", _IDENTITIES.c.channel == bindparam("channel"),
    _IDENTITIES.c.external_id == bindparam("external_id"))
_CONTACT_BY_IDENTITY = select(CONTACTS).join(
    _IDENTITIES, _IDENTITIES.c.contact_id == CONTACTS.c.id).where(
    _IDENTITIES.c.kind == "contact", _IDENTITIES.c.channel == bindparam("channel"),
    _IDENTITIES.c.external_id == bindparam("external_id"))


_REACHABLE_AGAIN = update(_IDENTITIES).where(
    _IDENTITIES.c.channel == bindparam("on_channel"),
    _IDENTITIES.c.external_id == bindparam("id_there"),
    _IDENTITIES.c.unreachable_since.is_not(None)).values(unreachable_since=None)


def _person_by_identity(db, channel: str, external_id: str,
                        kind: str | None = None) -> Person | None:
    """The employee with this identity, else the contact (or only the `kind` asked)."""
    values = {"channel": channel, "external_id": external_id[:255]}
    if kind != "contact":
        row = db.execute(_EMPLOYEE_BY_IDENTITY, values).first()
        if row is not None or kind == "employee":
            return person_of(row, "employee") if row is not None else None
    row = db.execute(_CONTACT_BY_IDENTITY, values).first()
    return person_of(row, "contact") if row is not None else None


def ticket_by_number(session: Session, number: int, lock: bool = False) -> Ticket | None:
    query = select(Ticket).where(Ticket.number == number)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def ticket_row_by_number(session: Session, number: int):
    """Ticket `number` as a row of the tickets table, unlocked; None when there is none."""
    return session.execute(_TICKET_ROW_BY_NUMBER, {"number": number}).first()


def ticket_by_id(session: Session, ticket_id: int) -> Ticket | None:
    """The Ticket entity (from the session's identity map when it is there), unlocked."""
    return session.get(Ticket, ticket_id)


def locked_ticket(session: Session, ticket_id: int) -> Ticket:
    """The Ticket entity read fresh from the database and locked: Core statements of
    this transaction may have changed the row since the session loaded it."""
    return session.get(Ticket, ticket_id, populate_existing=True, with_for_update=True)


def touch_ticket(session: Session, ticket_id: int, at: datetime) -> None:
    """Set the ticket's updated_at (a message it took)."""
    execute(session, _TOUCH, {"ticket_id": ticket_id, "at": at})


def first_response(session: Session, ticket_id: int, at: datetime) -> None:
    """Set the ticket's first_response_at, unless it has one."""
    execute(session, _FIRST_RESPONSE, {"ticket_id": ticket_id, "at": at})


_TICKET_ROW_BY_NUMBER = select(TICKETS).where(TICKETS.c.number == bindparam("number"))
_TOUCH = update(TICKETS).where(TICKETS.c.id == bindparam("ticket_id")) \
    .values(updated_at=bindparam("at"))
_FIRST_RESPONSE = update(TICKETS).where(
    TICKETS.c.id == bindparam("ticket_id"),
    TICKETS.c.first_response_at.is_(None)).values(first_response_at=bindparam("at"))


def earliest_admin(session: Session) -> Employee | None:
    return session.scalar(select(Employee).where(Employee.role == ADMIN_ROLE)
                          .order_by(Employee.created_at, Employee.id).limit(1))


def employee_by_email(session: Session, email: str) -> Employee | None:
    """The Employee entity with this (lower-case) email; None when there is none."""
    return session.scalar(select(Employee).where(Employee.email == email))


# The same as a row, for the rules (once per batch: an ORM query costs a millisecond).
_EARLIEST_ADMIN = select(EMPLOYEES).where(EMPLOYEES.c.role == ADMIN_ROLE) \
    .order_by(EMPLOYEES.c.created_at, EMPLOYEES.c.id).limit(1)


# ------------------------------------------------------------------ channel cursors
def get_cursor(session: Session, key: str) -> tuple[int | None, int] | None:
    """(validity, position) of an inbound channel's cursor, None before its first read."""
    row = session.get(ChannelCursor, key)
    return (row.validity, row.position) if row is not None else None


def set_cursor(session: Session, key: str, validity: int | None, position: int,
               now: datetime) -> None:
    row = session.get(ChannelCursor, key, with_for_update=True)
    if row is None:
        session.add(ChannelCursor(key=key, validity=validity, position=position,
                                  updated_at=now))
    else:
        row.validity, row.position, row.updated_at = validity, position, now


class StoreCursors:
    """The adapters' CursorStore (channels/base.py) over the store: each move its own
    short transaction, taken after what it covers was committed."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def get(self, key: str) -> tuple[int | None, int] | None:
        return await self.store.run(get_cursor, key)

    async def set(self, key: str, validity: int | None, position: int) -> None:
        await self.store.run(set_cursor, key, validity, position, self.clock())
