"""The directory's write side: companies, contacts and employees from a file or the CLI.

`helpgate directory import FILE` takes JSON or TOML with the keys `companies`, `contacts`
and `employees`. An import is one transaction and idempotent: entries are matched by
company name, contact email (or phone, or a messenger id) and employee email, and updated
in place. A bad entry stops the whole import with its position named, and nothing is
written.

A person's ids on messengers are `identities` (channel -> id, e.g. {telegram = "42"});
`telegram_id` and `vk_id` are kept as short forms of the same.

An entry is deleted (`delete_entry`) only while nothing of the help desk's history
points at it: a contact or company with tickets or comments, a company with contacts,
an employee who wrote comments or is or was in a ticket's assignment history, the last
administrator are refused with the reason (`EntryInUse`), so no ticket loses its
customer and no comment its author.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import (
    ApiToken,
    AssignmentChange,
    Comment,
    Company,
    CompanyDomain,
    Contact,
    Employee,
    Identity,
    OutboxMessage,
    StaffToken,
    Ticket,
)

ROLES = ("admin", "agent")


class DirectoryError(ValueError):
    """A directory file or entry that cannot be imported, named in one line."""


class EntryNotFound(DirectoryError):
    """No such company, contact or employee."""


class EntryInUse(DirectoryError):
    """An entry the help desk's history points at: it stays."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("email", mode="before", check_fields=False)
    @classmethod
    def _email(cls, value):
        if value in (None, ""):
            return None
        value = str(value).strip().lower()
        if "@" not in value or " " in value:
            raise ValueError(f"{value!r} is not an email address")
        return value


class CompanyEntry(_Entry):
    name: str
    domains: list[str] = []
    email: str | None = None
    phone: str | None = None
    # The company's group chats with the bot, per channel ({"telegram": [-100123…]}):
    # tickets opened there belong to the company.
    groups: dict[str, list[str]] = {}

    @field_validator("domains")
    @classmethod
    def _domains(cls, value):
        return [d.strip().lower().lstrip("@") for d in value if d.strip()]

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value):
        if not isinstance(value, dict):
            raise ValueError('a table of channel -> chat ids, e.g. {"telegram": [-1001234]}')
        return {str(channel): [str(chat).strip() for chat in (
            chats if isinstance(chats, list) else [chats])] for channel, chats in value.items()}


class ContactEntry(_Entry):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    telegram_id: int | None = None
    vk_id: int | None = None
    identities: dict[str, str] = {}
    duplicate_email: str | None = None

    def ids(self) -> dict[str, str]:
        return _ids(self.identities, telegram=self.telegram_id, vk=self.vk_id)


class EmployeeEntry(_Entry):
    name: str
    email: str | None = None
    phone: str | None = None
    role: str = "agent"
    telegram_id: int | None = None
    identities: dict[str, str] = {}

    def ids(self) -> dict[str, str]:
        return _ids(self.identities, telegram=self.telegram_id)

    @field_validator("role")
    @classmethod
    def _role(cls, value):
        if value not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return value


def _ids(identities: dict[str, str], **short: int | None) -> dict[str, str]:
    ids = {channel.strip().lower(): str(value).strip() for channel, value in identities.items()}
    ids.update({channel: str(value) for channel, value in short.items() if value is not None})
    return {channel: value for channel, value in ids.items() if channel and value}


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    companies: list[CompanyEntry] = []
    contacts: list[ContactEntry] = []
    employees: list[EmployeeEntry] = []


def read_directory_file(path: str) -> DirectoryFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise DirectoryError(f"{path}: not valid {kind}: {exc}") from None
    try:
        return DirectoryFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise DirectoryError(f"{path}: {where.lstrip('.')}: {message}") from None


def import_directory(session: Session, data: DirectoryFile, now: datetime) -> dict:
    counts = {"companies": 0, "contacts": 0, "employees": 0}
    for entry in data.companies:
        upsert_company(session, entry, now)
        counts["companies"] += 1
    for entry in data.employees:
        upsert_employee(session, entry, now)
        counts["employees"] += 1
    for entry in data.contacts:
        upsert_contact(session, entry, now)
        counts["contacts"] += 1
    return counts


def upsert_company(session: Session, entry: CompanyEntry, now: datetime) -> Company:
    company = session.scalar(select(Company).where(Company.name == entry.name))
    if company is None:
        company = Company(name=entry.name, created_at=now)
        session.add(company)
    company.email = entry.email
    company.phone = entry.phone
    session.flush()
    for domain in entry.domains:
        owner = session.get(CompanyDomain, domain)
        if owner is not None and owner.company_id != company.id:
            other = session.get(Company, owner.company_id)
            raise DirectoryError(f"domain {domain} already belongs to company {other.name!r}")
        if owner is None:
            session.add(CompanyDomain(domain=domain, company_id=company.id))
    for channel, chats in entry.groups.items():
        for chat in chats:
            _set_identities(session, "company", company.id, {channel: chat}, now, entry.name)
    session.flush()
    return company


def upsert_contact(session: Session, entry: ContactEntry, now: datetime) -> Contact:
    company_id = None
    if entry.company:
        company = session.scalar(select(Company).where(Company.name == entry.company))
        if company is None:
            raise DirectoryError(f"contact {entry.email or entry.name}: unknown company "
                                 f"{entry.company!r}")
        company_id = company.id
    ids = entry.ids()
    contact = None
    if entry.email:
        contact = session.scalar(select(Contact).where(Contact.email == entry.email))
    elif entry.phone:
        contact = session.scalar(select(Contact).where(Contact.phone == entry.phone))
    for channel, value in ids.items():
        if contact is None and not entry.email:
            contact = session.scalar(select(Contact).join(
                Identity, Identity.contact_id == Contact.id).where(
                Identity.kind == "contact", Identity.channel == channel,
                Identity.external_id == value))
    if contact is None:
        if not (entry.email or entry.phone or ids):
            raise DirectoryError(f"contact {entry.name!r} needs an email, phone or messenger id")
        contact = Contact(email=entry.email, created_at=now)
        session.add(contact)
    for key in ("name", "phone", "duplicate_email"):
        value = getattr(entry, key)
        if value is not None:
            setattr(contact, key, value)
    if company_id is not None:
        contact.company_id = company_id
    session.flush()
    _set_identities(session, "contact", contact.id, ids, now,
                    entry.email or entry.name or entry.phone)
    return contact


def _set_identities(session: Session, kind: str, person_id: int, ids: dict[str, str],
                    now: datetime, who: str | None) -> None:
    """Give the person these ids; an id another person of the kind has is an error."""
    for channel, value in ids.items():
        identity = session.scalar(select(Identity).where(
            Identity.kind == kind, Identity.channel == channel, Identity.external_id == value))
        if identity is None:
            session.add(Identity(kind=kind, channel=channel, external_id=value, created_at=now,
                                 **{f"{kind}_id": person_id}))
        elif getattr(identity, f"{kind}_id") != person_id:
            raise DirectoryError(f"{kind} {who}: {channel} id {value} already belongs to "
                                 f"another {kind}")
    session.flush()


def upsert_employee(session: Session, entry: EmployeeEntry, now: datetime) -> Employee:
    employee = None
    if entry.email:
        employee = session.scalar(select(Employee).where(Employee.email == entry.email))
    if employee is None:
        employee = Employee(email=entry.email, name=entry.name, created_at=now)
        session.add(employee)
    employee.name = entry.name
    employee.role = entry.role
    if entry.phone is not None:
        employee.phone = entry.phone
    session.flush()
    _set_identities(session, "employee", employee.id, entry.ids(), now,
                    entry.email or entry.name)
    return employee


# ------------------------------------------------------------- one customer, many channels
def phone_key(phone: str | None, digits: int) -> str:
    """The last `digits` digits of a phone number: "+7 (916) 123-45-67" and "89161234567"
    are the same customer. Empty for a number too short to tell (or digits = 0)."""
    only = re.sub(r"\D", "", phone or "")
    return only[-digits:] if digits and len(only) >= digits else ""


def contact_by_phone(session: Session, phone: str, digits: int) -> Contact | None:
    """The earliest contact whose phone ends in the same `digits` digits."""
    key = phone_key(phone, digits)
    if not key:
        return None
    for contact in session.scalars(select(Contact).where(Contact.phone.is_not(None))
                                   .order_by(Contact.id)):
        if phone_key(contact.phone, digits) == key:
            return contact
    return None


def bind(session: Session, channel: str, external_id: str, now: datetime, *,
         phone: str | None = None, email: str | None = None, digits: int = 10) -> int | None:
    """A messenger user who shared a phone number or an email is the contact who has it
    (R-TH-10: one customer, one history). Their identity moves to that contact, and so do
    the tickets and comments of the contact the messenger alone had made for them; without
    such a contact, theirs takes the phone and email. Returns the contact's id."""
    email = email.strip().lower() if email and "@" in email else None
    identity = session.scalar(select(Identity).where(
        Identity.kind == "contact", Identity.channel == channel,
        Identity.external_id == external_id[:255]))
    own = session.get(Contact, identity.contact_id) if identity is not None else None
    known = (session.scalar(select(Contact).where(Contact.email == email)) if email else None) \
        or (contact_by_phone(session, phone, digits) if phone else None)
    if known is not None and own is not None and known.id != own.id:
        _merge(session, own, known)
    elif known is not None and own is None:
        session.add(Identity(kind="contact", channel=channel, external_id=external_id[:255],
                             contact_id=known.id, created_at=now))
    target = known or own
    if target is None:
        return None
    if phone and not target.phone:
        target.phone = phone[:40]
    if email and not target.email:
        target.email = email
    session.flush()
    return target.id


def _merge(session: Session, gone: Contact, into: Contact) -> None:
    """Everything of `gone` (a contact a messenger made) becomes `into`'s; `gone` goes."""
    for table in (Ticket.__table__, Comment.__table__, OutboxMessage.__table__,
                  Identity.__table__):
        session.execute(update(table).where(table.c.contact_id == gone.id)
                        .values(contact_id=into.id))
    into.name = into.name or gone.name
    into.company_id = into.company_id or gone.company_id
    into.phone = into.phone or gone.phone
    email, gone.email = gone.email, None
    session.flush()  # the address is unique: free it before `into` takes it
    into.email = into.email or email
    session.delete(gone)


ENTRY_MODELS = {"company": Company, "contact": Contact, "employee": Employee}


def delete_entry(session: Session, kind: str, entry_id: int) -> dict:
    """Delete one company, contact or employee that no history points at; else raise
    EntryInUse naming what does (nothing is changed). With it go what only it owned:
    a company's domains, a person's messenger identities, an employee's API tokens and
    reply addresses (so nothing can act as them any more)."""
    row = session.get(ENTRY_MODELS[kind], entry_id, with_for_update=True)
    if row is None:
        raise EntryNotFound(f"no {kind} {entry_id}")
    name = getattr(row, "email", None) or row.name or str(entry_id)
    uses = [f"{n} {what}" for what, n in _uses(session, kind, entry_id) if n]
    if kind == "employee" and row.role == "admin" and not session.scalar(
            select(func.count()).select_from(Employee).where(
                Employee.role == "admin", Employee.id != entry_id)):
        uses.append("the role of the only administrator (the author of mail from "
                    "unknown senders, R-TH-3)")
    if uses:
        raise EntryInUse(f"{kind} {entry_id} ({name}) is kept: it has {', '.join(uses)}")
    gone = {"deleted": kind, "id": entry_id, "name": row.name,
            "email": getattr(row, "email", None)}
    if kind == "employee":
        for model in (ApiToken, StaffToken):
            session.query(model).filter(model.employee_id == entry_id).delete()
    session.query(Identity).filter(getattr(Identity, f"{kind}_id") == entry_id).delete()
    session.delete(row)
    try:
        session.flush()
    except IntegrityError:
        # A reference _uses does not know of yet: the database keeps the row, and so do we.
        raise EntryInUse(f"{kind} {entry_id} ({name}) is kept: other records point at "
                         "it") from None
    return gone


def _uses(session: Session, kind: str, entry_id: int) -> list[tuple[str, int]]:
    """What of the history points at the entry, counted."""
    def count(column) -> int:
        return session.scalar(select(func.count()).where(column == entry_id)) or 0
    if kind == "contact":
        return [("tickets", count(Ticket.contact_id)), ("comments", count(Comment.contact_id))]
    if kind == "company":
        return [("tickets", count(Ticket.company_id)), ("contacts", count(Contact.company_id))]
    assignments = session.scalar(select(func.count()).select_from(AssignmentChange).where(
        or_(AssignmentChange.from_employee_id == entry_id,
            AssignmentChange.to_employee_id == entry_id,
            AssignmentChange.by_employee_id == entry_id))) or 0
    return [("comments", count(Comment.employee_id)),
            ("tickets assigned", count(Ticket.assignee_id)),
            ("assignment history entries", assignments)]
