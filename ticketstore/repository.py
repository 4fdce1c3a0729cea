"""The ticket store: engine and transactions, the rules' Directory, and the writes.

One `Store` per process. Every unit of work runs in one transaction through `Store.run`,
as plain synchronous SQLAlchemy code on the async engine (`run_sync`), so a pipeline step
reads like a script and still never blocks the event loop. SQLite is opened in WAL mode and
write transactions start with BEGIN IMMEDIATE, so a CLI command and a running gateway never
interleave half-made decisions; on PostgreSQL the rows a decision depends on are locked
with SELECT … FOR UPDATE and uniqueness is left to constraints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from helpgate.channels.base import InboundMessage
from helpgate.threading.context import Person, TicketView
from helpgate.ticketstore.models import (
    Comment,
    CompanyDomain,
    Contact,
    Counter,
    Employee,
    OutboxMessage,
    Ticket,
)
from helpgate.ticketstore.models import (
    InboundMessage as InboundRow,
)

log = logging.getLogger("helpgate.store")
T = TypeVar("T")
ADMIN_ROLE = "admin"


def normalize_url(url: str) -> str:
    """Accept plain sqlite:// and postgresql:// URLs; the store needs the async drivers."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
              "postgres": "postgresql+asyncpg"}.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


class Store:
    def __init__(self, url: str, echo: bool = False,
                 connect_args: dict | None = None) -> None:
        self.url = normalize_url(url)
        self.connect_args = connect_args or {}
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            folder = os.path.dirname(os.path.abspath(parsed.database))
            os.makedirs(folder, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(self.url, echo=echo,
                                                       connect_args=self.connect_args)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def close(self) -> None:
        await self.engine.dispose()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(session, *args)` in one transaction; commit if it returns."""
        async with self.sessions() as session, session.begin():
            return await session.run_sync(work, *args)

    async def ensure_schema(self) -> None:
        """Bring the schema to the newest migration (cheap when it already is)."""
        from helpgate.ticketstore.migrations import HEAD, upgrade
        async with self.engine.connect() as conn:
            current = await conn.run_sync(_current_revision)
        if current != HEAD:
            await upgrade(self.engine)

    # ---------------------------------------------------------------- inbound messages
    async def keep_raw(self, message: InboundMessage, sender: str | None) -> tuple[int, bool]:
        """Store the raw message before any decision (R-TS-5).

        Returns (inbound id, is_duplicate). A duplicate is detected by the database's
        unique key, so two gateway instances receiving the same mail store it once.
        """
        row = {"channel": message.channel, "dedupe_key": message.dedupe_key[:500],
               "raw": message.raw, "meta": {}, "received_at": message.received_at,
               "state": "received", "sender": sender}
        try:
            return await self.run(_insert_inbound, row), False
        except IntegrityError:
            existing = await self.run(_inbound_id_by_key, message.channel, row["dedupe_key"])
            return existing, True


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the driver so BEGIN IMMEDIATE below is honoured.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):
        # The write lock up front: a decision read under it cannot go stale before commit.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _current_revision(conn) -> str | None:
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no table yet: a new database
        conn.rollback()
        return None


def _insert_inbound(session: Session, row: dict) -> int:
    return session.execute(insert(InboundRow).values(**row).returning(InboundRow.id)).scalar_one()


def _inbound_id_by_key(session: Session, channel: str, key: str) -> int:
    return session.execute(select(InboundRow.id).where(
        InboundRow.channel == channel, InboundRow.dedupe_key == key)).scalar_one()


# -------------------------------------------------------------------- the rules' view
def ticket_view(ticket: Ticket) -> TicketView:
    return TicketView(id=ticket.id, number=ticket.number, status=ticket.status,
                      type=ticket.type, channel=ticket.channel, contact_id=ticket.contact_id,
                      company_id=ticket.company_id, closed_at=ticket.closed_at)


def person_of(row: Contact | Employee) -> Person:
    if isinstance(row, Employee):
        return Person(kind="employee", id=row.id, email=row.email, name=row.name,
                      role=row.role)
    return Person(kind="contact", id=row.id, email=row.email, name=row.name,
                  company_id=row.company_id)


class SessionDirectory:
    """The threading rules' Directory over a session, inside the decision's transaction."""

    def __init__(self, session: Session,
                 settle: Callable[[Ticket], None] | None = None) -> None:
        self.session = session
        # Brings a found ticket up to date (timers it is owed) before rules see it.
        self.settle = settle

    def _view(self, ticket: Ticket | None) -> TicketView | None:
        if ticket is None:
            return None
        if self.settle is not None:
            self.settle(ticket)
        return ticket_view(ticket)

    def ticket_by_number(self, number: int) -> TicketView | None:
        return self._view(self.session.scalar(
            select(Ticket).where(Ticket.number == number).with_for_update()))

    def ticket_by_message_ids(self, message_ids: list[str]) -> TicketView | None:
        ids = [m[:500] for m in message_ids]
        ticket_id = self.session.scalar(
            select(Comment.ticket_id).where(Comment.message_id.in_(ids))
            .order_by(Comment.id.desc()).limit(1))
        if ticket_id is None:
            ticket_id = self.session.scalar(
                select(OutboxMessage.ticket_id).where(OutboxMessage.message_id.in_(ids),
                                                      OutboxMessage.ticket_id.is_not(None))
                .order_by(OutboxMessage.id.desc()).limit(1))
        if ticket_id is None:
            return None
        return self._view(self.session.scalar(
            select(Ticket).where(Ticket.id == ticket_id).with_for_update()))

    def outbox_id_by_message_id(self, message_id: str) -> int | None:
        return self.session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.message_id == message_id[:500]))

    def person_by_email(self, email: str) -> Person | None:
        email = email.lower()
        employee = self.session.scalar(select(Employee).where(Employee.email == email))
        if employee is not None:
            return person_of(employee)
        contact = self.session.scalar(select(Contact).where(Contact.email == email))
        return person_of(contact) if contact is not None else None

    def company_by_domain(self, domain: str) -> int | None:
        return self.session.scalar(
            select(CompanyDomain.company_id).where(CompanyDomain.domain == domain.lower()))

    def earliest_admin(self) -> Person | None:
        admin = self.session.scalar(
            select(Employee).where(Employee.role == ADMIN_ROLE)
            .order_by(Employee.created_at, Employee.id).limit(1))
        return person_of(admin) if admin else None

    def messages_from_since(self, sender: str, since: datetime) -> int:
        return self.session.scalar(
            select(func.count()).select_from(InboundRow)
            .where(InboundRow.sender == sender, InboundRow.received_at >= since)) or 0


# ------------------------------------------------------------------------- the writes
def _upsert_ignore(session: Session, model, values: dict, conflict: list[str]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on both backends: a racing instance may win."""
    dialect = session.get_bind().dialect.name
    builder = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(builder(model).values(**values).on_conflict_do_nothing(
        index_elements=conflict))


def next_ticket_number(session: Session) -> int:
    """The next ticket number; the counter row's lock serializes concurrent instances."""
    number = session.execute(
        update(Counter).where(Counter.name == "ticket").values(value=Counter.value + 1)
        .returning(Counter.value)).scalar()
    if number is None:
        _upsert_ignore(session, Counter, {"name": "ticket", "value": 0}, ["name"])
        return next_ticket_number(session)
    return number


def get_or_create_contact(session: Session, email: str, name: str | None,
                          company_id: int | None, now: datetime) -> Contact:
    email = email.lower()
    _upsert_ignore(session, Contact, {"email": email, "name": name, "company_id": company_id,
                                      "created_at": now}, ["email"])
    return session.scalars(select(Contact).where(Contact.email == email)).one()


def ticket_by_number(session: Session, number: int, lock: bool = False) -> Ticket | None:
    query = select(Ticket).where(Ticket.number == number)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def earliest_admin(session: Session) -> Employee | None:
    return session.scalar(select(Employee).where(Employee.role == ADMIN_ROLE)
                          .order_by(Employee.created_at, Employee.id).limit(1))
