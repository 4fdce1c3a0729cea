"""The directory's write side: companies, contacts and employees from a file or the CLI.

`helpgate directory import FILE` takes JSON or TOML with the keys `companies`, `contacts`
and `employees`. An import is one transaction and idempotent: entries are matched by
company name, contact email (or phone) and employee email, and updated in place. A bad
entry stops the whole import with its position named, and nothing is written.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import Company, CompanyDomain, Contact, Employee

ROLES = ("admin", "agent")


class DirectoryError(ValueError):
    """A directory file or entry that cannot be imported, named in one line."""


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

    @field_validator("domains")
    @classmethod
    def _domains(cls, value):
        return [d.strip().lower().lstrip("@") for d in value if d.strip()]


class ContactEntry(_Entry):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    telegram_id: int | None = None
    vk_id: int | None = None
    duplicate_email: str | None = None


class EmployeeEntry(_Entry):
    name: str
    email: str | None = None
    phone: str | None = None
    role: str = "agent"
    telegram_id: int | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value):
        if value not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return value


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
    contact = None
    if entry.email:
        contact = session.scalar(select(Contact).where(Contact.email == entry.email))
    elif entry.phone:
        contact = session.scalar(select(Contact).where(Contact.phone == entry.phone))
    if contact is None:
        if not (entry.email or entry.phone or entry.telegram_id or entry.vk_id):
            raise DirectoryError(f"contact {entry.name!r} needs an email, phone or messenger id")
        contact = Contact(email=entry.email, created_at=now)
        session.add(contact)
    for key in ("name", "phone", "telegram_id", "vk_id", "duplicate_email"):
        value = getattr(entry, key)
        if value is not None:
            setattr(contact, key, value)
    if company_id is not None:
        contact.company_id = company_id
    session.flush()
    return contact


def upsert_employee(session: Session, entry: EmployeeEntry, now: datetime) -> Employee:
    employee = None
    if entry.email:
        employee = session.scalar(select(Employee).where(Employee.email == entry.email))
    if employee is None:
        employee = Employee(email=entry.email, name=entry.name, created_at=now)
        session.add(employee)
    employee.name = entry.name
    employee.role = entry.role
    for key in ("phone", "telegram_id"):
        if getattr(entry, key) is not None:
            setattr(employee, key, getattr(entry, key))
    session.flush()
    return employee
