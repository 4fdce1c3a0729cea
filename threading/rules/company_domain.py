"""An unknown sender from a company's own mail domain is that company's customer (R-TH-4).

Public mail services (gmail.com, mail.ru, yandex.ru, …) never match: a domain anyone can
register an address at says nothing about the company.
"""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory

NAME = "company_domain"
DESCRIPTION = "bind an unknown sender to the company owning their mail domain"


def apply(ctx: Context, directory: Directory) -> None:
    sender = ctx.message.sender_email
    if ctx.decision.author is not None or not sender or "@" not in sender:
        return
    domain = sender.rsplit("@", 1)[1]
    if domain in ctx.config.threading.public_domain_set():
        ctx.notes.append(f"{NAME}: {domain} is a public mail domain, not a company's")
        return
    company_id = directory.company_by_domain(domain)
    if company_id is not None:
        ctx.decision.company_id = company_id
        ctx.fire(NAME, f"domain {domain} belongs to company {company_id}")
