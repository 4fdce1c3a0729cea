"""SQLAlchemy models of the ticket store (R-TS-2) and of the gateway's own bookkeeping.

The same schema serves the embedded SQLite default and PostgreSQL. Everything that must
stay unique when several gateway instances share one database (ticket numbers, inbound
messages, outbox rows, contacts by email) is guarded by a database constraint, never by a
lock held in one process. Times are stored in UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    mapped_column,
    relationship,
)

# SQLite has no 64-bit autoincrement type of its own: BIGINT there would lose ROWID aliasing.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def storable(value: str) -> str:
    """Text every backend takes: PostgreSQL refuses NUL, the drivers refuse lone
    surrogates (undecoded 8-bit bytes). The channels clean what they read; this is the
    last line, so no value from anywhere (a CLI argument, a future channel) can make one
    backend fail where the other stores."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if value.isascii():  # no surrogates in it (most values; checking costs nothing)
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


class Bounded(TypeDecorator):
    """VARCHAR(n) that holds on every backend: longer values are cut to n characters, as
    SQLite would keep them whole but PostgreSQL would refuse the row."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, str):
            value = storable(value)
            if len(value) > self.impl.length:
                value = value[:self.impl.length]
        return value


class CleanText(TypeDecorator):
    """TEXT without the characters one backend refuses (see `storable`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return storable(value) if isinstance(value, str) else value


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, whatever the backend keeps (SQLite keeps naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware times")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect):
        process = super().bind_processor(dialect)
        if process is None:
            return None
        # A batch writes one `now` into a dozen columns of every message: the conversion
        # of the last value is kept (a datetime never changes; the pair is set at once).
        last = (None, None)

        def convert(value):
            nonlocal last
            seen, converted = last
            if value is seen and value is not None:
                return converted
            converted = process(value)
            last = (value, converted)
            return converted
        return convert

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON, list: JSON}


class Counter(Base):
    """Named sequences (ticket numbers): `UPDATE … RETURNING` takes the row lock."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(Bounded(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class ChannelCursor(Base):
    """Where an inbound channel has read up to: an IMAP mailbox's UIDVALIDITY and last
    processed UID, later a messenger's update offset. Advanced only after the messages
    before it are stored, so a restart resumes without skipping one (R-CH-1)."""

    __tablename__ = "channel_cursors"
    key: Mapped[str] = mapped_column(Bounded(500), primary_key=True)
    validity: Mapped[int | None] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class OAuthGrant(Base):
    """A mailbox's or relay's OAuth2 grant (`helpgate oauth login`): the refresh token,
    encrypted with the key from HELPGATE_SECRET_KEY, and the access token it last gave
    (encrypted too), shared by every process. A rotated refresh token is committed here
    before the access token of the same answer is used (gateway/oauth.py), and
    `refreshing_until` is the lease of the one process refreshing now. State "ok", or
    "needs_login" once the provider refused the grant (revoked, expired): then `detail`
    says why and `notified_at` when staff were told, once."""

    __tablename__ = "oauth_grants"
    name: Mapped[str] = mapped_column(Bounded(320), primary_key=True)
    provider: Mapped[str] = mapped_column(Bounded(40))
    refresh_token: Mapped[str | None] = mapped_column(Text)
    access_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    refresh_at: Mapped[datetime | None]
    refreshing_until: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(Bounded(20))
    detail: Mapped[str | None] = mapped_column(CleanText)
    rotations: Mapped[int] = mapped_column(Integer, default=0)
    refreshed_at: Mapped[datetime | None]
    notified_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class GatewayInstance(Base):
    """A running `helpgate run`, and its last heartbeat (ticketstore/instances.py).

    Outbox rows name the instance that claimed them, so when an instance falls silent its
    claims are known to be orphaned at once instead of after the outbox lease (R-OUT-6).
    """

    __tablename__ = "gateway_instances"
    id: Mapped[str] = mapped_column(Bounded(64), primary_key=True)
    host: Mapped[str] = mapped_column(Bounded(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class Company(Base):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Bounded(255), unique=True)
    email: Mapped[str | None] = mapped_column(Bounded(320))
    phone: Mapped[str | None] = mapped_column(Bounded(40))
    created_at: Mapped[datetime]
    domains: Mapped[list[CompanyDomain]] = relationship(
        back_populates="company", cascade="all, delete-orphan")


class CompanyDomain(Base):
    __tablename__ = "company_domains"
    domain: Mapped[str] = mapped_column(Bounded(255), primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    company: Mapped[Company] = relationship(back_populates="domains")


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(Bounded(255))
    email: Mapped[str | None] = mapped_column(Bounded(320), unique=True)
    phone: Mapped[str | None] = mapped_column(Bounded(40), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"))
    # R-OUT-3: an address that gets a copy of what the contact gets.
    duplicate_email: Mapped[str | None] = mapped_column(Bounded(320))
    created_at: Mapped[datetime]


class Employee(Base):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Bounded(255))
    email: Mapped[str | None] = mapped_column(Bounded(320), unique=True)
    phone: Mapped[str | None] = mapped_column(Bounded(40))
    role: Mapped[str] = mapped_column(Bounded(20), default="agent")
    created_at: Mapped[datetime]


class Identity(Base):
    """A person's id on a channel other than mail (a Telegram user id, a VK id): a contact
    or an employee may have one per channel, and is found by it. Mail identifies people by
    the address on the contact or employee itself."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("kind", "channel", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # "contact" | "employee" | "company" (a customer company's group chat)
    kind: Mapped[str] = mapped_column(Bounded(10))
    channel: Mapped[str] = mapped_column(Bounded(20))
    external_id: Mapped[str] = mapped_column(Bounded(255))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    employee_id: Mapped[int | None] = mapped_column(
        ForeignKey("employees.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"))
    # The ticket the person chose for their chat messages when several are open (a
    # button the bot offered, or /new): their next messages go there while it is open.
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    # An email address the person typed in the chat: bound to them once they type back
    # the code mailed there (its digest here), before pending_until.
    pending_email: Mapped[str | None] = mapped_column(Bounded(320))
    pending_code: Mapped[str | None] = mapped_column(Bounded(64))
    pending_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # The channel refused to deliver to them (they blocked the bot): passed over when a
    # channel is chosen for them, until they write from it again.
    unreachable_since: Mapped[datetime | None]


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    subject: Mapped[str] = mapped_column(CleanText())
    type: Mapped[str] = mapped_column(Bounded(40))
    priority: Mapped[str] = mapped_column(Bounded(20))
    status: Mapped[str] = mapped_column(Bounded(40), index=True)
    channel: Mapped[str] = mapped_column(Bounded(20))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]
    # When the ticket last entered a closed-class state; the reopen window counts from it.
    closed_at: Mapped[datetime | None]
    pending_until: Mapped[datetime | None]
    # R-TS-4: first public answer by staff, and resolution time counted only while open:
    # open_seconds accumulates finished open stretches, open_since marks the current one.
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    open_seconds: Mapped[float] = mapped_column(default=0.0)
    open_since: Mapped[datetime | None]
    # The customer's rating of the resolved ticket, 1-5 (a messenger's buttons).
    rating: Mapped[int | None]
    rated_at: Mapped[datetime | None]
    # The messenger group chat the ticket lives in (a customer company's), when replies
    # go there rather than to the contact's private chat.
    chat: Mapped[str | None] = mapped_column(Bounded(100))
    # The employee responsible for the ticket (ticketstore/assignments.py), if any.
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id"), index=True)


class TicketLink(Base):
    """A follow-up ticket opened because its predecessor could no longer be reopened."""

    __tablename__ = "ticket_links"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    linked_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    relation: Mapped[str] = mapped_column(Bounded(20))


class StatusChange(Base):
    __tablename__ = "status_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(Bounded(40))
    to_status: Mapped[str] = mapped_column(Bounded(40))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Bounded(200))


class AssignmentChange(Base):
    """A ticket given to an employee, passed on, or taken back (`to_employee_id` None):
    its history beside the status history, with who did it."""

    __tablename__ = "assignment_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    from_employee_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id"))
    to_employee_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id"))
    by_employee_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id"))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Bounded(200))


class InboundMessage(Base):
    """Every raw message as received, kept before any decision (R-TS-5).

    `state` is received → processed | ignored | duplicate | quarantined. The unique key on
    (channel, dedupe_key) is what stores a message delivered twice only once (R-TH-9).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("channel", "dedupe_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(Bounded(20))
    dedupe_key: Mapped[str] = mapped_column(Bounded(500))
    meta: Mapped[dict] = mapped_column(default=dict)
    received_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(Bounded(20), index=True)
    reason: Mapped[str | None] = mapped_column(CleanText())
    result: Mapped[dict | None]
    processed_at: Mapped[datetime | None]
    sender: Mapped[str | None] = mapped_column(Bounded(320))


class InboundRaw(Base):
    """The raw bytes of an inbound message, in a row of their own that is written once.

    The message's row is updated as it is decided; in SQLite an update rewrites the whole
    record, so bytes kept there would be copied (twice, in memory) with every change of
    state. Here they are written once, in chunks (repository.write_blob).
    """

    __tablename__ = "inbound_raw"
    inbound_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("inbound_messages.id", ondelete="CASCADE"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


# Read as a column of the message (queries, replay), stored in inbound_raw.
InboundMessage.raw = column_property(
    select(InboundRaw.raw).where(InboundRaw.inbound_id == InboundMessage.id)
    .correlate_except(InboundRaw).scalar_subquery(), deferred=True)


Index("ix_inbound_sender_time", InboundMessage.sender, InboundMessage.received_at)


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    author_kind: Mapped[str] = mapped_column(Bounded(20))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    employee_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id"))
    public: Mapped[bool] = mapped_column(Boolean)
    channel: Mapped[str] = mapped_column(Bounded(20))
    text: Mapped[str] = mapped_column(CleanText())
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    # Email metadata (R-TS-2); message_id also threads replies to this mail (R-TH-1).
    message_id: Mapped[str | None] = mapped_column(Bounded(500), index=True)
    email_from: Mapped[str | None] = mapped_column(Bounded(500))
    email_to: Mapped[list | None]
    email_cc: Mapped[list | None]
    email_date: Mapped[str | None] = mapped_column(Bounded(100))
    headers: Mapped[dict | None]
    # The threading decision: the rules that fired and why (DESIGN.md: traceable).
    decision: Mapped[dict | None]
    created_at: Mapped[datetime]
    attachments: Mapped[list[Attachment]] = relationship(lazy="selectin",
                                                         order_by="Attachment.id")


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id"), index=True)
    filename: Mapped[str] = mapped_column(Bounded(500))
    content_type: Mapped[str] = mapped_column(Bounded(200))
    size: Mapped[int] = mapped_column(BigInteger)
    # False when the file was over the size limit: name and size are kept, content not.
    stored: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)


class OutboxMessage(Base):
    """A message to deliver; written in the same transaction as the event it announces.

    `dedupe_key` makes a notification impossible to queue twice (R-OUT-6).
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(Bounded(500), unique=True)
    channel: Mapped[str] = mapped_column(Bounded(20))
    kind: Mapped[str] = mapped_column(Bounded(40))
    recipient: Mapped[str] = mapped_column(Bounded(500))
    subject: Mapped[str | None] = mapped_column(CleanText())
    # The message as a mail (separator, the words, the quoted history)...
    text: Mapped[str] = mapped_column(CleanText())
    html: Mapped[str | None] = mapped_column(CleanText())
    # ...and the words alone, what a messenger sends (None on rows from before 0009).
    content: Mapped[str | None] = mapped_column(CleanText())
    # The customer it is addressed to, when it is: the channel and address are resolved
    # for them again at send time should this channel be unusable (outbound/targets.py).
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"))
    message_id: Mapped[str | None] = mapped_column(Bounded(500), unique=True)
    headers: Mapped[dict] = mapped_column(default=dict)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id"))
    # Ids of the stored attachments this message carries (outbound/attachments.py).
    attachments: Mapped[list | None]
    # Buttons a messenger shows under the message: rows of [label, action data]
    # (threading/message.py ChatAction); mail shows the words alone.
    buttons: Mapped[list | None]
    state: Mapped[str] = mapped_column(Bounded(20), index=True)
    # The gateway instance that claimed the row last (gateway_instances.id; no foreign
    # key: the instance's row goes when it stops, the claim's trace stays).
    claimed_by: Mapped[str | None] = mapped_column(Bounded(64))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(CleanText())
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


# The acknowledgement cap counts one address's recent rows (outbound/notify.py).
Index("ix_outbox_recipient_time", OutboxMessage.recipient, OutboxMessage.created_at)


class DeliveryReport(Base):
    """A bounce (DSN) recorded against the outgoing message it reports (R-TH-8)."""

    __tablename__ = "delivery_reports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), index=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"))
    original_message_id: Mapped[str | None] = mapped_column(Bounded(500))
    recipient: Mapped[str | None] = mapped_column(Bounded(500))
    action: Mapped[str | None] = mapped_column(Bounded(40))
    status: Mapped[str | None] = mapped_column(Bounded(20))
    diagnostic: Mapped[str | None] = mapped_column(CleanText())
    created_at: Mapped[datetime]


class StaffToken(Base):
    """The secret in a staff member's per-ticket reply address (`support+<token>@…`).

    A staff notification's Reply-To carries it, so an employee's answer through that
    address proves who wrote it (issue #15: only authenticated staff mail is relayed to a
    customer). The value is random (130 bits), never derived from the ticket or the
    employee; `revoked_at` ends it (an employee leaves, an address leaked).
    """

    __tablename__ = "staff_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id"), index=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


Index("ix_staff_tokens_ticket_employee", StaffToken.ticket_id, StaffToken.employee_id)


class StaffTopic(Base):
    """The staff group's topic of a ticket (a Telegram forum topic): where the ticket's
    messages are posted and where what an employee writes answers the customer. One per
    ticket; a topic staff deleted is replaced by the one made on the next post."""

    __tablename__ = "staff_topics"
    __table_args__ = (UniqueConstraint("chat_id", "thread_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class ChatMessage(Base):
    """A messenger message of a ticket: one the bot posted (a notification, a post in a
    staff topic) or one staff wrote in a topic, named by its chat and its id there
    (message ids count per chat). Read both ways: a message to its ticket and comment, a
    ticket or comment to its messages."""

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("channel", "chat_id", "message_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(Bounded(20))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id"), index=True)
    created_at: Mapped[datetime]


class ApiToken(Base):
    """An employee's bearer token for the staff HTTP API (`helpgate api-token issue`).

    Not a staff reply token (`StaffToken`, a per-ticket secret in a reply address): this
    one signs every API request as its employee. Only its SHA-256 is kept (the value is
    shown once, when issued), so a copy of the database gives no way in; `prefix` names it
    in listings; `revoked_at` ends it.
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Bounded(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id"), index=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class CannedAnswer(Base):
    """A canned answer staff pick when replying (the staff API's reply takes its id,
    `helpgate reply --canned` its id or title): a title to find it by, unique across all
    cases (so a title alone names one answer), the case it is filed under (R-OUT-7;
    None: no case) and the text sent."""

    __tablename__ = "canned_answers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(Bounded(200), unique=True)
    case_name: Mapped[str | None] = mapped_column(Bounded(100), index=True)
    text: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
