"""The ticket list's page (the staff API's GET /tickets) reads one query of columns, not
ORM objects: each row must still be exactly the ticket's summary (the shape of `helpgate
ticket --json` and `tickets --json`) — with and without a contact, a company, a closing
time — and the filters and the cursor hold. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.ticketstore.models import Company, Contact, Ticket
from helpgate.ticketstore.queries import ticket_page, ticket_summary
from tests.conftest import Clock


async def test_a_page_is_the_tickets_summaries(store):
    config, now = Config(), Clock().now

    def seed(session):
        company = Company(name="Romashka LLC", created_at=now)
        session.add(company)
        session.flush()
        with_company = Contact(email="ivan@romashka.ru", name="Иван", phone="+7916",
                               company_id=company.id, created_at=now)
        alone = Contact(email=None, name=None, phone=None, created_at=now)
        session.add_all([with_company, alone])
        session.flush()
        for number, contact, company_id, status in [
                (1, with_company.id, company.id, "open"), (2, alone.id, None, "resolved"),
                (3, None, None, "closed"), (4, None, company.id, "pending"),
                (5, with_company.id, company.id, "open")]:
            session.add(Ticket(number=number, subject=f"Тема {number}", type="question",
                               priority="normal", status=status, channel="email",
                               contact_id=contact, company_id=company_id,
                               created_at=now + timedelta(minutes=number), updated_at=now,
                               status_changed_at=now, closed_at=now if status == "closed"
                               else None))

    await store.run(seed)

    def summaries(session):
        return [ticket_summary(session, config, t) for t in session.scalars(
            select(Ticket).order_by(Ticket.number.desc()))]

    expected = await store.run(summaries)
    page, cursor = await store.run(ticket_page, config, None, None, None, None, 50)
    assert page == expected and cursor is None
    assert page[2]["contact"] is None and page[3]["contact"] == {
        "email": None, "name": None, "phone": None}   # a contact with nothing known yet
    first, cursor = await store.run(ticket_page, config, None, None, None, None, 2)
    assert ([t["number"] for t in first], cursor) == ([5, 4], 4)
    rest, cursor = await store.run(ticket_page, config, None, None, None, 4, 2)
    assert ([t["number"] for t in rest], cursor) == ([3, 2], 2)
    by = {"status": ("open", None, None), "contact": (None, " IVAN@romashka.ru", None),
          "company": (None, None, " romashka llc")}
    numbers = {name: [t["number"] for t in (await store.run(
        ticket_page, config, *args, None, 50))[0]] for name, args in by.items()}
    assert numbers == {"status": [5, 1], "contact": [5, 1], "company": [5, 4, 1]}
