"""The one configuration schema of helpgate, with its defaults.

Everything an admin tunes lives here (R-CFG-1): reopen windows, the status model, the
subject marker, separator and acknowledgement texts, size limits, notification rules.
The example file `helpgate.example.toml` documents the same keys one by one; a test keeps
the two in step. Values are validated when the file is loaded (see load.py), so a wrong
value stops the gateway at start with the key's name instead of misbehaving later.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from helpgate.config.oauth import OAuth2Config

DEFAULT_DATABASE_URL = "sqlite:///helpgate.db"

# Free mail services: a sender's domain there says nothing about their company (R-TH-4).
PUBLIC_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "hotmail.com", "outlook.com",
    "live.com", "msn.com", "aol.com", "icloud.com", "me.com", "mac.com", "proton.me",
    "protonmail.com", "gmx.com", "gmx.de", "gmx.net", "web.de", "mail.com", "zoho.com",
    "yandex.ru", "yandex.com", "yandex.by", "yandex.kz", "yandex.ua", "ya.ru", "narod.ru",
    "mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru", "rambler.ru", "lenta.ru",
    "autorambler.ru", "myrambler.ru", "ro.ru", "qip.ru", "ukr.net", "i.ua", "meta.ua",
    "tut.by", "seznam.cz", "wp.pl", "o2.pl", "interia.pl", "libero.it", "orange.fr",
    "free.fr", "laposte.net", "t-online.de", "qq.com", "163.com", "126.com", "naver.com",
    "daum.net", "hanmail.net", "yahoo.co.jp",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FOREVER_WORDS = ("forever", "never")


def parse_window(value: str | int) -> timedelta | None:
    """A window or timeout: "7d", "36h", "90m", "0" (none at all) or "forever" (no end).

    Returns None for "forever"/"never" so callers cannot mistake it for a huge number.
    """
    text = str(value).strip().lower()
    if text in FOREVER_WORDS:
        return None
    if text == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not a duration: use a number with s, m, h, d or w "
            '("7d", "36h"), "0" or "forever"')
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3}


def parse_size(value: str | int) -> int:
    """A byte size: 1048576, "512KB", "10MB"."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use bytes or a number with KB, MB or GB")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


def format_size(size: int) -> str:
    """A byte size for people: "45 B", "1.5 MB" (the inverse of parse_size)."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _port(value: int, lowest: int = 1) -> int:
    if not lowest <= value <= 65535:
        raise ValueError(f"{value} is not a port: use a number from {lowest} to 65535")
    return value


# A TCP port. A listening port may also be 0: any free port (tests, one-off runs).
Port = Annotated[int, AfterValidator(_port)]
ListenPort = Annotated[int, AfterValidator(lambda value: _port(value, lowest=0))]


def _positive_duration(value: str) -> str:
    window = parse_window(value)
    if window is None or window.total_seconds() <= 0:
        raise ValueError(f"{value!r} is not a positive duration like 30s, 5m, 1h")
    return value


# A finite duration greater than zero: "30s", "5m", "1h".
Duration = Annotated[str, AfterValidator(_positive_duration)]


class Section(BaseModel):
    # Unknown keys are errors: a typo in a key must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(Section):
    url: str = DEFAULT_DATABASE_URL
    echo: bool = False


class SmtpRelayConfig(Section):
    # The relay our notifications leave through. No host: email notifications wait in
    # the outbox (visible with `helpgate outbox`) until one is configured.
    host: str = ""
    port: Port = 587
    # "starttls" (port 587), "tls" (implicit TLS, port 465) or "none" (a local relay).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    # Check the relay's certificate; ca_file names extra trusted CAs (a private CA).
    verify_tls: bool = True
    ca_file: str = ""
    # "password" (AUTH with username/password when a username is given) or "oauth2"
    # (AUTH XOAUTH2 as username with a token of the grant in [mail.smtp.oauth2]).
    auth: Literal["password", "oauth2"] = "password"
    oauth2: OAuth2Config | None = None

    @model_validator(mode="after")
    def _oauth2_complete(self):
        if self.auth == "oauth2" and (self.oauth2 is None or not self.username):
            raise ValueError('auth = "oauth2" needs username and an [mail.smtp.oauth2] table')
        return self

    @property
    def grant_name(self) -> str:
        return (self.oauth2.grant if self.oauth2 else "") or self.username


class EndpointConfig(Section):
    # Our own SMTP or LMTP server, for a mail server to deliver to (R-CH-2).
    enabled: bool = True
    protocol: Literal["smtp", "lmtp"] = "smtp"
    host: str = "127.0.0.1"
    port: ListenPort = 2525
    # Recipients accepted: these addresses and every address at these domains. With
    # both empty, only mail.address. Anything else is refused with 550 (no open relay).
    addresses: list[str] = []
    domains: list[str] = []
    # Ticket type of the tickets this endpoint's mail opens (default: tickets.default_type).
    ticket_type: str | None = None
    # Connections the kernel holds for us before we accept them: a burst of mail servers
    # connecting at once beyond this is refused or delayed (the kernel caps it at
    # net.core.somaxconn).
    backlog: int = Field(1024, ge=1)
    # The longest one SMTP/LMTP session may last; then the client is told 421 and the
    # connection closed, so no client holds a connection forever.
    max_session_time: Duration = "10m"

    @field_validator("addresses", "domains")
    @classmethod
    def _lower(cls, value):
        return [a.strip().lower().lstrip("@") for a in value]


class ImapConfig(Section):
    # One mailbox helpgate reads (R-CH-1).
    host: str
    # Default: 993 with security "tls", 143 otherwise.
    port: Port | None = None
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str
    # With auth "password" (the default); unused with "oauth2".
    password: str = ""
    # "oauth2": AUTHENTICATE XOAUTH2 with a token of the grant in [mail.imap.oauth2]
    # (`helpgate oauth login` first), as Microsoft 365 and Google require.
    auth: Literal["password", "oauth2"] = "password"
    oauth2: OAuth2Config | None = None
    folder: str = "INBOX"
    # Ticket type of the tickets this mailbox opens (default: tickets.default_type).
    ticket_type: str | None = None
    # After a message is stored: "flag" it \Seen, "move" it to move_to, or "delete" it.
    after: Literal["flag", "move", "delete"] = "flag"
    move_to: str = ""
    # IMAP IDLE where the server offers it; polling every poll_interval otherwise.
    idle: bool = True
    poll_interval: float = 60.0
    # Seconds after which an IDLE is ended and issued again: providers drop a connection
    # that stays silent for 6-30 minutes (RFC 2177 allows 29), and a renewed IDLE also
    # proves the connection alive.
    idle_renew: float = Field(240.0, gt=0)
    # Seconds to wait for the server's greeting and for each command's answer.
    timeout: float = 30.0
    verify_tls: bool = True
    ca_file: str = ""

    @model_validator(mode="after")
    def _move_needs_folder(self):
        if self.after == "move" and not self.move_to:
            raise ValueError('after = "move" needs move_to, the folder to move mail to')
        return self

    @model_validator(mode="after")
    def _credentials(self):
        if self.auth == "oauth2" and self.oauth2 is None:
            raise ValueError('auth = "oauth2" needs an [mail.imap.oauth2] table')
        if self.auth == "password" and not self.password:
            raise ValueError("password is required (or auth = \"oauth2\")")
        return self

    @property
    def grant_name(self) -> str:
        return (self.oauth2.grant if self.oauth2 else "") or self.username

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)

    @property
    def name(self) -> str:
        return f"{self.username}@{self.host}/{self.folder}"


class MailConfig(Section):
    address: str = "support@helpgate.localhost"
    display_name: str = "Support"
    reply_to: str = ""
    # Further addresses that are ours (aliases, the relay's envelope sender): mail from
    # them is our own notification coming back and never opens a ticket (R-TH-8).
    own_addresses: list[str] = []
    message_id_domain: str = "helpgate.localhost"
    max_attachment_size: int = 10 * 1024 * 1024
    max_message_size: int = 50 * 1024 * 1024
    # Files one notification carries at most, in total (a staff answer's files to the
    # customer, a customer's files to staff); the text names those left out.
    max_outgoing_attachments_size: int = 10 * 1024 * 1024
    # Worker processes that parse large IMAP fetches beside the gateway (a backlog reads
    # on two cores). Unset: one fewer than the machine's CPUs; 0: parse in the gateway.
    parser_workers: int | None = Field(default=None, ge=0, le=64)
    # An HTML design for notifications: a file whose {{{CONTENT}}} the text replaces.
    # Empty: plain text only (the text/plain part is always sent).
    html_template: str = ""
    # Staff notifications reply to a per-ticket, per-employee address (our address with a
    # secret plus-tag: support+<token>@…); an employee's mail through it counts as staff's.
    # Off for a mailbox that cannot take plus-addressed mail.
    staff_reply_tokens: bool = True
    # authserv-ids of OUR receiving mail servers whose Authentication-Results fields are
    # believed: a DKIM pass aligned with an employee's domain, or a DMARC pass for it, makes
    # the employee's mail count as staff's. Empty: only reply tokens authenticate staff.
    authserv_ids: list[str] = []
    smtp: SmtpRelayConfig = SmtpRelayConfig()
    endpoint: EndpointConfig = EndpointConfig()
    imap: list[ImapConfig] = []

    @field_validator("max_attachment_size", "max_message_size",
                     "max_outgoing_attachments_size", mode="before")
    @classmethod
    def _size(cls, value):
        return parse_size(value)

    @field_validator("own_addresses", "authserv_ids")
    @classmethod
    def _lower(cls, value):
        return [a.strip().lower() for a in value]


_BOT_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfig(Section):
    # The bot's token from @BotFather ("123456:ABC-..."); empty: the Telegram channel is
    # off (no adapter, no transport).
    token: str = ""
    # Where the Bot API is: Telegram's, or a local Bot API server.
    api_base_url: str = "https://api.telegram.org"
    # "polling": we ask Telegram for updates (no public address needed); "webhook":
    # Telegram posts them to webhook_url, which must reach our server below.
    mode: Literal["polling", "webhook"] = "polling"
    # Seconds one long poll (getUpdates) waits for updates.
    polling_timeout: int = Field(default=25, ge=0, le=50)
    # Webhook mode: the public https URL Telegram posts to; our aiohttp server listens on
    # webhook_host:webhook_port at webhook_path (a reverse proxy forwards to it).
    webhook_url: str = ""
    webhook_host: str = "127.0.0.1"
    webhook_port: ListenPort = 8443
    webhook_path: str = "/telegram"
    # Telegram sends it back in X-Telegram-Bot-Api-Secret-Token: posts without it are
    # refused. 1-256 characters of A-Z, a-z, 0-9, _ and -; required in webhook mode.
    webhook_secret: str = ""
    # Ticket type of the tickets Telegram messages open (default: tickets.default_type).
    ticket_type: str | None = None
    # The staff group: a forum supergroup (Topics on) where each ticket gets a topic of
    # its own; customer messages are posted there, and what an employee writes in a
    # topic answers the customer (/note: a private note, /close: close the ticket).
    # Its id is negative (-100...); 0 = no staff group.
    staff_chat_id: int = 0

    @field_validator("staff_chat_id")
    @classmethod
    def _staff_chat(cls, value):
        if value > 0:
            raise ValueError("a group's id is negative (a supergroup's starts with -100); "
                             f"{value} is a user's: add the bot to the staff group and take "
                             "the group's id")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value):
        value = value.strip()
        if value and not _BOT_TOKEN.match(value):
            raise ValueError("not a bot token: a token looks like "
                             "123456789:AAE... (digits, a colon, then letters), as @BotFather "
                             "gave it")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value):
        if value and not _WEBHOOK_SECRET.match(value):
            raise ValueError("must be 1-256 characters of A-Z, a-z, "
                             "0-9, _ and - (Telegram refuses others)")
        return value

    @field_validator("webhook_path")
    @classmethod
    def _path(cls, value):
        return value if value.startswith("/") else "/" + value

    @model_validator(mode="after")
    def _webhook_needs(self):
        if self.token and self.mode == "webhook":
            if not self.webhook_url:
                raise ValueError('telegram.mode = "webhook" needs telegram.webhook_url, the '
                                 "public https URL Telegram posts updates to")
            if not self.webhook_secret:
                raise ValueError('telegram.mode = "webhook" needs telegram.webhook_secret '
                                 "(1-256 characters of A-Z, a-z, 0-9, _ and -), so that only "
                                 "Telegram can post updates to us")
        return self


class VkConfig(Section):
    # A VK community bot (R-CH-4). An empty token: VK is off (no adapter, no transport).
    token: str = ""
    group_id: int = 0
    # Where vk-api's calls go (it hard-codes https://api.vk.ru): another base (a proxy,
    # a test's fake) is reached through a transport adapter mounted on that prefix.
    api_base_url: str = "https://api.vk.ru"
    api_version: str = "5.199"
    # "longpoll": helpgate asks VK for events (nothing to open to the internet);
    # "callback": VK POSTs events to our server at callback_host:callback_port/callback_path.
    mode: Literal["longpoll", "callback"] = "longpoll"
    callback_host: str = "127.0.0.1"
    callback_port: ListenPort = 8444
    callback_path: str = "/vk"
    # The string VK asks the server to answer once, when the address is confirmed.
    confirmation_code: str = ""
    # VK sends it with every event; an event without it is refused (callback mode).
    secret: str = ""
    # Ticket type of tickets opened through VK (default: tickets.default_type).
    ticket_type: str | None = None

    @model_validator(mode="after")
    def _callback_needs_secret(self):
        if self.token and self.mode == "callback":
            if not self.secret:
                raise ValueError('vk.secret is required with mode = "callback": set the '
                                 "same secret key in the community's Callback API settings")
            if not self.confirmation_code:
                raise ValueError('vk.confirmation_code is required with mode = "callback": '
                                 "copy it from the community's Callback API settings")
        if self.token and self.group_id <= 0:
            raise ValueError("vk.group_id is required with a token: the community's id "
                             "(a positive number)")
        return self


# The kinds of notification an SMS template may be given for, and what it may name.
SMS_TEMPLATE_KINDS = ("comment", "status", "ack", "staff")
SMS_PLACEHOLDERS = {"text": "", "number": 0}


class SmsConfig(Section):
    # SMS as an outbound channel (R-OUT-1, R-OUT-4): staff answers (`helpgate reply --via
    # sms`), the status changes listed below and the fallback order reach a contact's
    # phone. Nothing comes in by SMS. "" = off; "smsc" (SMSC.ru), "smsru" (SMS.ru),
    # "smsaero" (SMSAero), or the name a package registers in the entry-point group
    # helpgate.sms_gateways.
    provider: str = ""
    # Credentials. SMSC.ru: login and password (or api_key alone); SMS.ru: api_key (its
    # api_id); SMSAero: login (the account's email) and api_key.
    login: str = ""
    password: str = ""
    api_key: str = ""
    # The sender name the provider approved for the account; "" = the account's default.
    sender: str = ""
    # Where the provider's API is; "" = its own (https://smsc.ru, https://sms.ru,
    # https://gate.smsaero.ru). Another base: a proxy, a test's fake.
    base_url: str = ""
    # Seconds to connect, and to wait for the answer once the request is written. A send
    # whose answer does not come in time may have gone out: SMSC is asked by our id,
    # other providers' messages are parked as "uncertain", never sent twice by themselves.
    timeout: float = Field(default=15.0, gt=0)
    # A number written without a country code (10 digits) gets this one.
    default_country_code: str = "7"
    # One message is at most max_parts SMS parts (160 Latin / 70 Cyrillic characters in one
    # part, 153 / 67 in each of several). A longer text is "trim"med to fit (ending in
    # "…") or, with "park", not sent at all: parked with the reason.
    max_parts: int = Field(default=3, ge=1, le=10)
    too_long: Literal["trim", "park"] = "trim"
    # Statuses whose entry is announced to the contact by SMS (R-OUT-5; none by default).
    status_changes: list[str] = []
    # The SMS text per kind of notification (comment, status, ack; staff: to an employee's
    # phone, notifications.employee_channels); {text} is the words
    # as they would go to a messenger, {number} the ticket's number. Default: "{text}".
    templates: dict[str, str] = {}
    # Settings of a gateway plugged in through helpgate.sms_gateways, read by it alone.
    options: dict[str, str] = {}

    @field_validator("provider")
    @classmethod
    def _provider(cls, value):
        value = value.strip().lower()
        if value and not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", value):
            raise ValueError(f"{value!r} is not a gateway name: use smsc, smsru, smsaero "
                             "or the name of an installed helpgate.sms_gateways entry point")
        return value

    @field_validator("default_country_code")
    @classmethod
    def _country(cls, value):
        value = value.strip().lstrip("+")
        if not re.fullmatch(r"[1-9]\d{0,2}", value):
            raise ValueError(f"{value!r} is not a country calling code (1-3 digits: 7, 49)")
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value):
        for kind, template in value.items():
            if kind not in SMS_TEMPLATE_KINDS:
                raise ValueError(f"no SMS template kind {kind!r}; known: "
                                 f"{', '.join(SMS_TEMPLATE_KINDS)}")
            try:
                template.format(**SMS_PLACEHOLDERS)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"template {kind!r}: {exc!r}; it may name only "
                                 "{text} and {number}") from None
        return value


# What a custom web-form field may be called: a plain key, none of the form's own.
WEBFORM_OWN_FIELDS = ("name", "email", "phone", "text", "lang", "website", "files")
WEBFORM_FIELD_TYPES = ("text", "select", "textarea")


class WebformField(Section):
    # A field of the web form beyond its own four (R-CH-5: "Field": "value" in the
    # description): `name` is the form's key, `label` what people see (one text, or one
    # per language: {ru = "…", en = "…"}); a select offers `options`; `max_length`
    # defaults to max_field_length (text, select) or max_text_length (textarea).
    name: str
    label: str | dict[str, str]
    type: str = "text"
    required: bool = False
    options: list[str] = []
    max_length: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", value):
            raise ValueError(f"{value!r} is not a field name: lower-case letters, digits "
                             "and _, starting with a letter (at most 40)")
        if value in WEBFORM_OWN_FIELDS:
            raise ValueError(f"{value!r} is one of the form's own fields "
                             f"({', '.join(WEBFORM_OWN_FIELDS)}): choose another name")
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value):
        labels = {"": value} if isinstance(value, str) else value
        unknown = [lang for lang in labels if lang and lang not in TEXTS]
        if unknown:
            raise ValueError(f"no language {unknown[0]!r}; known: {', '.join(TEXTS)}")
        if not labels or not all(str(text).strip() for text in labels.values()):
            raise ValueError("a field needs a label people see")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value):
        if value not in WEBFORM_FIELD_TYPES:
            raise ValueError(f"{value!r} is not a field type; known: "
                             f"{', '.join(WEBFORM_FIELD_TYPES)}")
        return value

    @model_validator(mode="after")
    def _options(self):
        if self.type == "select" and not [o for o in self.options if o.strip()]:
            raise ValueError(f"field {self.name!r}: a select needs options")
        if self.type != "select" and self.options:
            raise ValueError(f"field {self.name!r}: options are for type \"select\" only")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"field {self.name!r}: an option is listed twice")
        return self

    def label_for(self, language: str) -> str:
        if isinstance(self.label, str):
            return self.label
        return self.label.get(language) or next(iter(self.label.values()))


class WebformConfig(Section):
    # The web form (R-CH-5): a page at `path` on host:port (behind the site's reverse
    # proxy) whose submissions become tickets; each submitter is known by the email
    # they give, as on mail. Off unless enabled.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: ListenPort = 8445
    # GET path serves the form, POST path takes it (the form posts to itself).
    path: str = "/form"
    # Sites whose pages may post the form (and frame it): "https://example.com". A POST
    # whose Origin header is another site is refused; the page served at `path` is
    # helpgate's own origin and always allowed.
    allowed_origins: list[str] = []
    # A request body over this is refused (413); a field over its length is shown as an
    # error next to it (the text is kept in the form).
    max_body_size: int = 64 * 1024
    max_text_length: int = Field(default=10000, ge=1)
    max_field_length: int = Field(default=200, ge=1)
    # Per client address: at most rate_limit submissions within rate_window (0 = no
    # limit); the rest are answered 429 and not stored (the form keeps the text). The
    # submitter's email is limited as any sender is (threading.throttle_max).
    rate_limit: int = Field(default=10, ge=0)
    rate_window: str = "1h"
    # Behind a reverse proxy every client has the proxy's address: name the header the
    # proxy sets (X-Forwarded-For, X-Real-IP) and its last address is the client's.
    client_ip_header: str = ""
    # Ticket type of tickets opened through the form (default: tickets.default_type).
    ticket_type: str | None = None
    # Fields of the form beyond name, email, phone and the message, in the order shown
    # (between the phone and the message): see WebformField.
    fields: list[WebformField] = []
    # Files people may attach (0: the form has no file field), each at most
    # max_file_size; they become attachments of the ticket's first comment. A request
    # may then be max_body_size + max_files × max_file_size long.
    max_files: int = Field(default=0, ge=0, le=20)
    max_file_size: int = 5 * 1024 * 1024

    @field_validator("max_body_size", "max_file_size", mode="before")
    @classmethod
    def _size(cls, value):
        return parse_size(value)

    @field_validator("fields")
    @classmethod
    def _unique(cls, value):
        names = [f.name for f in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"field {twice[0]!r} is listed twice")
        return value

    def request_limit(self) -> int:
        """The largest request the server reads: the fields, and the files allowed (with
        room for each part's multipart headers)."""
        return self.max_body_size + self.max_files * (self.max_file_size + 4096)

    @field_validator("rate_window")
    @classmethod
    def _window(cls, value):
        return _positive_duration(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value):
        return value if value.startswith("/") else "/" + value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value):
        cleaned = [origin.strip().rstrip("/").lower() for origin in value]
        for origin in cleaned:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme and host, "
                                 '"https://example.com" (a port if not the default)')
        return cleaned


class ReopenRule(Section):
    type: str | None = None
    channel: str | None = None
    window: str

    @field_validator("window")
    @classmethod
    def _window(cls, value):
        parse_window(value)
        return value

    @model_validator(mode="after")
    def _matches_something(self):
        if self.type is None and self.channel is None:
            raise ValueError("a reopen rule needs `type`, `channel` or both")
        return self


class ReopenConfig(Section):
    default: str = "7d"
    rules: list[ReopenRule] = []

    @field_validator("default")
    @classmethod
    def _window(cls, value):
        parse_window(value)
        return value

    def window_for(self, ticket_type: str | None, channel: str) -> tuple[timedelta | None, str]:
        """The window for a ticket type and inbound channel: first matching rule wins."""
        for index, rule in enumerate(self.rules):
            if rule.type not in (None, ticket_type):
                continue
            if rule.channel not in (None, channel):
                continue
            return parse_window(rule.window), f"reopen.rules[{index}]"
        return parse_window(self.default), "reopen.default"


class StatusState(Section):
    id: str
    names: dict[str, str] = {}
    # Statuses this one may change to (R-TS-3); an empty list makes the state final.
    next: list[str] = []
    # A closed-class state: the reopen window (R-TH-6) applies to messages arriving now,
    # and time spent here does not count as resolution time (R-TS-4).
    closed: bool = False
    # Entering it needs an "until" time; when that passes the ticket moves to `after_until`.
    needs_until: bool = False
    after_until: str | None = None
    # Time after which a ticket left in this state moves to `auto_to` ("never" = off).
    auto_after: str = "never"
    auto_to: str | None = None

    @field_validator("auto_after")
    @classmethod
    def _window(cls, value):
        parse_window(value)
        return value


def _default_states() -> list[StatusState]:
    return [
        StatusState(id="open", names={"ru": "Открыта", "en": "Open"},
                    next=["pending", "resolved"]),
        StatusState(id="pending", names={"ru": "Отложена", "en": "Pending"},
                    next=["open", "resolved"], needs_until=True, after_until="open"),
        StatusState(id="resolved", names={"ru": "Решена", "en": "Resolved"},
                    next=["closed", "open"], closed=True, auto_to="closed"),
        StatusState(id="closed", names={"ru": "Закрыта", "en": "Closed"}, closed=True),
    ]


class StatusConfig(Section):
    states: list[StatusState] = Field(default_factory=_default_states)
    # The state of a new ticket and the state a reopened ticket returns to.
    initial: str = "open"
    # A customer's reply to a ticket in this state returns it to `initial` (R-TH-7).
    waiting_for_customer: list[str] = ["pending"]

    @model_validator(mode="after")
    def _consistent(self):
        ids = [s.id for s in self.states]
        if len(set(ids)) != len(ids):
            raise ValueError(f"status ids repeat: {ids}")
        known = set(ids)
        if self.initial not in known:
            raise ValueError(f"initial status {self.initial!r} is not one of {ids}")
        for state in self.states:
            for target in [*state.next, state.after_until, state.auto_to]:
                if target is not None and target not in known:
                    raise ValueError(f"status {state.id!r} refers to unknown status {target!r}")
            if state.needs_until and not state.after_until:
                raise ValueError(f"status {state.id!r} needs_until but has no after_until")
            if parse_window(state.auto_after) is not None and not state.auto_to:
                raise ValueError(f"status {state.id!r} has auto_after but no auto_to")
        for waiting in self.waiting_for_customer:
            if waiting not in known:
                raise ValueError(f"waiting_for_customer status {waiting!r} is not one of {ids}")
        if self.states_by_id()[self.initial].closed:
            raise ValueError(f"initial status {self.initial!r} cannot be a closed one")
        return self

    def states_by_id(self) -> dict[str, StatusState]:
        return {s.id: s for s in self.states}


class TicketConfig(Section):
    types: list[str] = ["question", "incident", "request", "internal"]
    default_type: str = "question"
    # Internal types never notify customers (R-OUT-5).
    internal_types: list[str] = ["internal"]
    priority: str = "normal"

    @model_validator(mode="after")
    def _known_type(self):
        if self.default_type not in self.types:
            raise ValueError(f"default_type {self.default_type!r} is not one of {self.types}")
        return self


# The rules that find a mail's ticket and author, which staff_auth then checks.
_STAFF_AUTH_AFTER = ("subject_marker", "references", "sender_identity")


class ThreadingConfig(Section):
    # Subject marker; `{number}` is the ticket number (R-TH-1).
    marker: str = "[#{number}]"
    # The rule chain, in order (DESIGN.md: the order is data).
    rules: list[str] = [
        "own_address", "bounce", "auto_reply", "spam_trap", "throttle",
        "subject_marker", "references", "sender_identity", "staff_auth", "company_domain",
        "conversation", "unknown_sender", "quote_strip", "waiting_for_customer",
        "reopen_policy",
    ]
    # R-TH-5: create a contact for an unknown sender's new ticket.
    create_contacts: bool = True
    # A messenger user who shares a phone number is the contact whose phone ends in the
    # same this-many digits (country and trunk prefixes differ: +7 916…, 8 916…). 0: only
    # an exact email binds them.
    phone_match_digits: int = Field(default=10, ge=0, le=15)
    # Domains added to the built-in list of public mail services (R-TH-4).
    public_domains: list[str] = []
    # R-TH-8: more than this many messages from one sender within `throttle_window` are
    # quarantined (not dropped) until an admin replays them. 0 turns throttling off.
    throttle_max: int = 60
    throttle_window: str = "1h"
    # A chat message from a customer with several open tickets waits this long for their
    # answer which ticket it is for (the bot asks with buttons); unanswered, it goes to
    # the most recently active one.
    chat_choice_wait: str = "10m"

    @field_validator("marker")
    @classmethod
    def _marker(cls, value):
        if value.count("{number}") != 1:
            raise ValueError("the marker must contain `{number}` exactly once")
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value):
        from helpgate.threading.chain import RULES  # the chain module owns the rule names
        for name in value:
            if name not in RULES:
                raise ValueError(f"unknown rule {name!r}; known: {', '.join(sorted(RULES))}")
        if len(set(value)) != len(value):
            raise ValueError("a rule is listed twice")
        if "staff_auth" in value:
            before = [name for name in _STAFF_AUTH_AFTER
                      if name in value and value.index(name) > value.index("staff_auth")]
            if before:
                raise ValueError(f"staff_auth must come after {', '.join(before)}: it checks "
                                 "the author of a mail on the ticket they found")
        return value

    @field_validator("throttle_window", "chat_choice_wait")
    @classmethod
    def _window(cls, value, info):
        if parse_window(value) is None:
            raise ValueError(f"{info.field_name} must be a finite duration")
        return value

    def public_domain_set(self) -> frozenset[str]:
        return frozenset(PUBLIC_MAIL_DOMAINS) | {d.lower() for d in self.public_domains}


class Texts(Section):
    separator: str
    ack_subject: str
    ack_text: str
    # The same for a customer on a messenger, who adds to the request by writing on.
    ack_text_chat: str
    # The bot's answer to /start: what to do next.
    bot_greeting: str
    comment_subject: str
    status_subject: str
    status_text: str
    staff_new_subject: str
    staff_comment_subject: str
    # Employees' notifications of an assignment and of a status change of their ticket.
    staff_assigned_subject: str
    staff_assigned_text: str
    staff_status_subject: str
    staff_status_text: str
    attachment_too_big: str
    staff_unverified_subject: str
    staff_unverified_text: str
    staff_author: str
    staff_reopened: str
    staff_follow_up: str
    staff_rerouted: str
    staff_unreachable: str
    staff_attachments: str
    attachment_not_stored: str
    attachment_left_out: str
    attachment_not_attached: str
    file_too_big_to_receive: str
    file_not_received: str
    # A messenger bot's answers to what a customer asks of it (gateway/customer_actions.py).
    chat_which_ticket: str
    chat_new_ticket_button: str
    chat_chosen: str
    chat_chosen_new: str
    chat_close_which: str
    chat_closed: str
    chat_already_closed: str
    chat_nothing_open: str
    chat_rate_prompt: str
    chat_rated: str
    chat_button_stale: str
    chat_share_contact: str
    chat_share_phone: str
    chat_share_contact_button: str
    chat_phone_bound: str
    chat_email_code_sent: str
    chat_email_code_wrong: str
    chat_email_bound: str
    email_code_subject: str
    email_code_text: str
    # The staff group's topics (telegram.staff_chat_id), in the staff's language.
    topic_answer: str
    topic_note: str
    topic_status: str
    topic_not_employee: str
    topic_unknown_command: str
    topic_cannot_close: str
    topic_edit_ignored: str
    # The web form (channels/webform/): labels, messages, the thank-you page.
    webform_title: str
    webform_intro: str
    webform_name: str
    webform_email: str
    webform_phone: str
    webform_optional: str
    webform_text: str
    webform_send: str
    webform_subject: str
    webform_required: str
    webform_bad_email: str
    webform_too_long: str
    webform_errors: str
    webform_rate_limited: str
    webform_thanks_title: str
    webform_thanks: str
    webform_kept: str
    webform_failed: str
    webform_bad_option: str
    webform_files: str
    webform_files_hint: str
    webform_too_many_files: str
    webform_file_too_big: str


TEXTS = {
    "ru": Texts(
        separator="##- Пожалуйста, пишите ответ выше этой строки -##",
        ack_subject="{marker} {subject}",
        ack_text=("Здравствуйте!\n\nВаше обращение зарегистрировано под номером {number}. "
                  "Мы ответим вам в ближайшее время.\n\nЧтобы дополнить обращение, "
                  "просто ответьте на это письмо."),
        ack_text_chat=("Здравствуйте!\n\nВаше обращение зарегистрировано под номером "
                       "{number}. Мы ответим вам здесь в ближайшее время.\n\nЧтобы "
                       "дополнить обращение, просто напишите сюда; /new — новое обращение."),
        bot_greeting=("Здравствуйте! Напишите ваш вопрос и приложите файлы, если нужно, — "
                      "мы ответим здесь."),
        comment_subject="{marker} {subject}",
        status_subject="{marker} {subject}",
        status_text="Статус обращения {number} изменён: {status}.",
        staff_new_subject="{marker} Новое обращение: {subject}",
        staff_comment_subject="{marker} Новый комментарий: {subject}",
        staff_assigned_subject="{marker} Вам назначено обращение: {subject}",
        staff_assigned_text="Обращение {number} «{subject}» назначено вам ({by}).",
        staff_status_subject="{marker} Статус: {status}: {subject}",
        staff_status_text="Статус вашего обращения {number} «{subject}» изменён: {status}.",
        attachment_too_big=("[Вложение «{filename}» ({size}) не сохранено: "
                            "оно больше допустимых {limit}.]"),
        staff_unverified_subject="{marker} Ваше письмо не отправлено клиенту: {subject}",
        staff_unverified_text=(
            "Письмо от вашего имени к обращению {number} сохранено как внутренняя заметка "
            "и никому не переслано: не удалось убедиться, что его написали вы ({reason}).\n\n"
            "Чтобы ответить клиенту, ответьте на это письмо или на уведомление об этом "
            "обращении: в их адресе для ответа ваш личный ключ. Если письмо писали не вы, "
            "сообщите администратору."),
        staff_author="Пишет: {author}; канал: {channel}",
        staff_reopened="Это сообщение открыло обращение снова (было: {status}).",
        staff_follow_up="Новое обращение вслед за обращением {previous}.",
        staff_rerouted=("Уведомление ушло через {channel} ({recipient}): через {previous} "
                        "helpgate отправлять не настроен."),
        staff_unreachable=("Уведомление ушло через {channel} ({recipient}): {previous} не "
                           "доставляет клиенту ({error})."),
        staff_attachments="Вложения (helpgate attachment get ID):",
        attachment_not_stored="не сохранено: больше допустимого размера",
        attachment_left_out="не приложено к письму: вложения больше {limit}",
        attachment_not_attached=("[Вложение «{filename}» ({size}) не приложено к письму: "
                                 "вложения одного письма не могут быть больше {limit}.]"),
        file_too_big_to_receive=("[Файл «{filename}» ({size}) слишком большой, чтобы его "
                                 "получить (не больше {limit}): пожалуйста, пришлите его "
                                 "по электронной почте.]"),
        file_not_received=("[Файл «{filename}» не удалось получить ({reason}): пожалуйста, "
                           "пришлите его ещё раз или по электронной почте.]"),
        chat_which_ticket=("У вас несколько открытых обращений. К какому из них относится "
                           "это сообщение?"),
        chat_new_ticket_button="Новое обращение",
        chat_chosen="Хорошо: ваши сообщения теперь идут в обращение {number}.",
        chat_chosen_new="Хорошо: это новое обращение, его номер {number}.",
        chat_close_which="Какое обращение закрыть?",
        chat_closed="Обращение {number} закрыто. Спасибо!",
        chat_already_closed="Обращение {number} уже закрыто.",
        chat_nothing_open="У вас нет открытых обращений. Напишите, если нужна помощь.",
        chat_rate_prompt="Оцените, пожалуйста, как мы помогли с обращением {number}: "
                         "от 1 (плохо) до 5 (отлично).",
        chat_rated="Спасибо за оценку {rating} из 5!",
        chat_button_stale="Эта кнопка больше не действует.",
        chat_share_contact=("Чтобы мы узнавали вас и в других каналах, напишите сюда ваш "
                            "адрес электронной почты."),
        chat_share_phone="Или поделитесь номером телефона кнопкой ниже.",
        chat_share_contact_button="Поделиться номером телефона",
        chat_phone_bound="Спасибо! Теперь мы узнаем вас и по номеру телефона.",
        chat_email_code_sent=("Мы отправили код на {email}: напишите его сюда, чтобы "
                              "подтвердить, что это ваш адрес."),
        chat_email_code_wrong=("Код не подходит. Напишите код из письма или ещё раз ваш "
                               "адрес электронной почты."),
        chat_email_bound="Спасибо! Теперь мы узнаем вас и по адресу {email}.",
        email_code_subject="Код подтверждения: {code}",
        email_code_text=("Здравствуйте!\n\nВ чате с ботом нашей поддержки ({channel}) этот "
                         "адрес назвали своим. Если это были вы, напишите в чат код: {code}\n\n"
                         "Если это были не вы, просто не отвечайте на это письмо."),
        topic_answer="{author} → клиенту ({channel}):",
        topic_note="{author}, внутренняя заметка ({channel}):",
        topic_status="Статус: {status}.",
        topic_not_employee=("{name} не сотрудник в справочнике helpgate (Telegram id {id}): "
                            "сообщение не передано клиенту, обращение не изменено."),
        topic_unknown_command=("Неизвестная команда /{command}: ничего не сделано. Текст без "
                               "команды уходит клиенту, /note текст — внутренняя заметка, "
                               "/close — закрыть обращение."),
        topic_cannot_close="Обращение {number} не закрыто: {reason}.",
        topic_edit_ignored=("Правка не передана: клиент уже получил первый текст. Напишите "
                            "исправление новым сообщением."),
        webform_title="Обращение в поддержку",
        webform_intro="Опишите вопрос — мы ответим на указанный адрес электронной почты.",
        webform_name="Имя",
        webform_email="Электронная почта",
        webform_phone="Телефон",
        webform_optional="(необязательно)",
        webform_text="Сообщение",
        webform_send="Отправить",
        webform_subject="Запрос с веб-формы",
        webform_required="Заполните это поле.",
        webform_bad_email="Это не адрес электронной почты.",
        webform_too_long="Не больше {limit} символов.",
        webform_errors="Проверьте отмеченные поля.",
        webform_rate_limited=("Слишком много обращений с вашего адреса. Попробуйте позже — "
                              "текст сохранён в форме."),
        webform_thanks_title="Спасибо!",
        webform_thanks=("Ваше обращение зарегистрировано под номером {number}. Мы ответим "
                        "на {email}."),
        webform_kept=("Ваше сообщение получено и будет рассмотрено. Отправлять его ещё раз "
                      "не нужно."),
        webform_failed=("Не удалось сохранить обращение. Попробуйте ещё раз через минуту — "
                        "текст сохранён в форме."),
        webform_bad_option="Выберите один из вариантов.",
        webform_files="Файлы",
        webform_files_hint="До {count} файлов, каждый не больше {size}.",
        webform_too_many_files="Не больше {limit} файлов; выберите файлы ещё раз.",
        webform_file_too_big="Файл {filename} больше {limit}; выберите файлы ещё раз.",
    ),
    "en": Texts(
        separator="##- Please type your reply above this line -##",
        ack_subject="{marker} {subject}",
        ack_text=("Hello,\n\nyour request has been registered as number {number}. "
                  "We will answer you shortly.\n\nTo add to your request, "
                  "simply reply to this email."),
        ack_text_chat=("Hello,\n\nyour request has been registered as number {number}. "
                       "We will answer you here shortly.\n\nTo add to your request, simply "
                       "write here; /new starts another one."),
        bot_greeting=("Hello! Write your question, with files if needed, and we will answer "
                      "you here."),
        comment_subject="{marker} {subject}",
        status_subject="{marker} {subject}",
        status_text="The status of request {number} is now: {status}.",
        staff_new_subject="{marker} New request: {subject}",
        staff_comment_subject="{marker} New comment: {subject}",
        staff_assigned_subject="{marker} Assigned to you: {subject}",
        staff_assigned_text="Request {number} \"{subject}\" is assigned to you ({by}).",
        staff_status_subject="{marker} Status: {status}: {subject}",
        staff_status_text="The status of your request {number} \"{subject}\" is now: {status}.",
        attachment_too_big=("[Attachment \"{filename}\" ({size}) was not stored: "
                            "it exceeds the limit of {limit}.]"),
        staff_unverified_subject="{marker} Your mail was not sent to the customer: {subject}",
        staff_unverified_text=(
            "A mail in your name to request {number} was kept as a private note and sent "
            "to no one: it could not be shown to come from you ({reason}).\n\n"
            "To answer the customer, reply to this mail or to a notification of this "
            "request: their reply address carries your personal key. If you did not write "
            "it, tell your administrator."),
        staff_author="From: {author}; channel: {channel}",
        staff_reopened="This message reopened the ticket (it was: {status}).",
        staff_follow_up="A new ticket following ticket {previous}.",
        staff_rerouted=("The notification went by {channel} ({recipient}): helpgate is not "
                        "set up to send by {previous}."),
        staff_unreachable=("The notification went by {channel} ({recipient}): {previous} "
                           "does not deliver to the customer ({error})."),
        staff_attachments="Attachments (helpgate attachment get ID):",
        attachment_not_stored="not stored: over the size limit",
        attachment_left_out="not attached to this mail: attachments over {limit}",
        attachment_not_attached=("[Attachment \"{filename}\" ({size}) is not attached to "
                                 "this mail: one mail carries at most {limit} of files.]"),
        file_too_big_to_receive=("[The file \"{filename}\" ({size}) is too big to receive "
                                 "(at most {limit}): please send it by email instead.]"),
        file_not_received=("[The file \"{filename}\" could not be received ({reason}): "
                           "please send it again or by email.]"),
        chat_which_ticket=("You have several open requests. Which one is this message "
                           "about?"),
        chat_new_ticket_button="A new request",
        chat_chosen="Fine: your messages now go to request {number}.",
        chat_chosen_new="Fine: this is a new request, number {number}.",
        chat_close_which="Which request shall we close?",
        chat_closed="Request {number} is closed. Thank you!",
        chat_already_closed="Request {number} is closed already.",
        chat_nothing_open="You have no open requests. Write to us whenever you need help.",
        chat_rate_prompt="Please rate how we helped with request {number}: from 1 (poor) "
                         "to 5 (excellent).",
        chat_rated="Thank you for your rating of {rating} out of 5!",
        chat_button_stale="This button no longer applies.",
        chat_share_contact=("So that we know you on our other channels too, write your "
                            "email address here."),
        chat_share_phone="Or share your phone number with the button below.",
        chat_share_contact_button="Share my phone number",
        chat_phone_bound="Thank you! We now know you by your phone number too.",
        chat_email_code_sent=("We have sent a code to {email}: type it here to confirm the "
                              "address is yours."),
        chat_email_code_wrong=("That code does not match. Type the code from the mail, or "
                               "your email address again."),
        chat_email_bound="Thank you! We now know you by {email} too.",
        email_code_subject="Your confirmation code: {code}",
        email_code_text=("Hello,\n\nin a chat with our support bot ({channel}) someone gave "
                         "this address as theirs. If it was you, type this code in the chat: "
                         "{code}\n\nIf it was not you, simply ignore this mail."),
        topic_answer="{author} → customer ({channel}):",
        topic_note="{author}, private note ({channel}):",
        topic_status="Status: {status}.",
        topic_not_employee=("{name} is not an employee in helpgate's directory (Telegram id "
                            "{id}): nothing was sent to the customer and the ticket is "
                            "unchanged."),
        topic_unknown_command=("Unknown command /{command}: nothing was done. Text without a "
                               "command goes to the customer, /note text is a private note, "
                               "/close closes the ticket."),
        topic_cannot_close="Ticket {number} was not closed: {reason}.",
        topic_edit_ignored=("An edit is not relayed: the customer already has the first text. "
                            "Write the correction as a new message."),
        webform_title="Contact support",
        webform_intro="Describe your question and we will answer at the email you give.",
        webform_name="Name",
        webform_email="Email",
        webform_phone="Phone",
        webform_optional="(optional)",
        webform_text="Message",
        webform_send="Send",
        webform_subject="Request via web form",
        webform_required="Please fill in this field.",
        webform_bad_email="This is not an email address.",
        webform_too_long="At most {limit} characters.",
        webform_errors="Please check the marked fields.",
        webform_rate_limited=("Too many requests from your address. Please try again later; "
                              "your text is kept in the form."),
        webform_thanks_title="Thank you!",
        webform_thanks="Your request is registered as number {number}. We will answer at {email}.",
        webform_kept="Your message was received and will be looked at. No need to send it again.",
        webform_failed=("Your request could not be stored. Please try again in a minute; "
                        "your text is kept in the form."),
        webform_bad_option="Please choose one of the options.",
        webform_files="Files",
        webform_files_hint="Up to {count} files, each at most {size}.",
        webform_too_many_files="At most {limit} files; please choose the files again.",
        webform_file_too_big="{filename} is larger than {limit}; please choose the files "
                             "again.",
    ),
}


# What employees may be told on, and of (notifications.employee_channels, _events).
EMPLOYEE_CHANNELS = ("email", "sms", "telegram", "vk")
EMPLOYEE_EVENTS = ("new_ticket", "customer_comment", "assignment", "status_change")


def _known_names(value: list[str], known: tuple[str, ...], what: str, hint: str) -> list[str]:
    """A list of names from `known`, trimmed, lower-cased and each once; the first
    unknown one is refused, naming the known ones."""
    cleaned = list(dict.fromkeys(name.strip().lower() for name in value))
    bad = [name for name in cleaned if name not in known]
    if bad:
        raise ValueError(f"{bad[0]!r} is not {what}; {hint} {', '.join(known)}")
    return cleaned


class NotificationConfig(Section):
    # Acknowledge a new ticket to the customer who opened it (the From address).
    acknowledge_new_tickets: bool = True
    # At most this many acknowledgements to one address per hour, counted in the
    # database (so across gateway instances); 0 = no cap.
    max_acknowledgements_per_hour: int = Field(default=5, ge=0)
    # Statuses whose entry is announced to the customer by email (R-OUT-5).
    status_changes: list[str] = ["resolved"]
    # Employees told about new tickets and customer comments: "all", "none" or a list of
    # employee email addresses. (A ticket's assignee hears of its customer comments alone,
    # with assigned_only.)
    employees: str | list[str] = "all"
    # The channels employees are told on (R-OUT-4): "email" (their directory address),
    # "sms" (their directory phone; needs [sms] provider), "telegram", "vk" (their own
    # chat with the bot: their identity in the directory; needs that channel's token).
    # The staff group's topics (telegram.staff_chat_id) are apart and stay as they are.
    employee_channels: list[str] = ["email"]
    # What employees are told of: "new_ticket", "customer_comment", "assignment" (to the
    # new assignee), "status_change" (to the assignee, for employee_status_changes).
    employee_events: list[str] = ["new_ticket", "customer_comment", "assignment",
                                  "status_change"]
    # Statuses whose entry is told to the ticket's assignee (R-OUT-5: on for employees).
    # A change a customer's message made (a reopen) is told with the message instead.
    employee_status_changes: list[str] = ["open", "resolved", "closed"]
    # A customer's comment on an assigned ticket goes to its assignee alone; false: to
    # the `employees` list as on an unassigned ticket.
    assigned_only: bool = True
    # R-OUT-3's optional duplicate "the author of the event": an employee who opened a
    # ticket, or assigned a ticket to themselves, is told of it too.
    notify_author: bool = False
    # Optional duplicate addresses (R-OUT-3).
    global_duplicate: str = ""
    company_duplicate: Literal["never", "always", "no_contact_email", "no_contact"] = "never"
    contact_duplicate: bool = True
    # A customer is answered on the channel their ticket came from (or the one staff
    # chose: `helpgate reply --via`); when they cannot be reached there (no id of theirs
    # on it, or no transport for it), these channels are tried in order: the first on
    # which they have an address and helpgate can send.
    fallback_order: list[str] = ["email"]

    @field_validator("employee_channels")
    @classmethod
    def _employee_channels(cls, value):
        return _known_names(value, EMPLOYEE_CHANNELS, "a channel employees can be told on",
                            "use")

    @field_validator("employee_events")
    @classmethod
    def _employee_events(cls, value):
        return _known_names(value, EMPLOYEE_EVENTS, "an event", "known:")

    @field_validator("fallback_order")
    @classmethod
    def _channels(cls, value):
        cleaned = [name.strip().lower() for name in value]
        bad = [name for name in cleaned if not re.fullmatch(r"[a-z][a-z0-9_]{0,19}", name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a channel name")
        return list(dict.fromkeys(cleaned))


class OutboxConfig(Section):
    # How often the worker looks for due messages (it is also woken by new ones).
    poll_interval: float = 5.0
    # A temporary failure (4xx, network) is retried after retry_after, doubling up to
    # retry_max; after max_attempts the message is parked.
    retry_after: str = "1m"
    retry_max: str = "1h"
    max_attempts: int = 10
    # A message claimed for sending longer ago than this by a gateway that stopped is
    # parked as "uncertain" rather than sent again: never twice (R-OUT-6).
    lease: str = "10m"
    # Each running gateway records a heartbeat this often. One silent for `dead_after`
    # is taken for dead (killed, its machine gone): the messages it had claimed go back
    # to the queue at once, and only those it was handing to the relay become "uncertain".
    heartbeat: Duration = "5s"
    dead_after: Duration = "15s"
    # Messages handed over side by side, marked "sending" in one commit and recorded in
    # one: the most a gateway killed mid-send can leave "uncertain" (never re-sent by
    # itself). More is faster against a slow provider, fewer leaves less for a person.
    in_flight: int = Field(default=16, ge=1, le=100)

    @field_validator("retry_after", "retry_max", "lease")
    @classmethod
    def _duration(cls, value):
        return _positive_duration(value)

    @model_validator(mode="after")
    def _heartbeat_fits(self):
        if parse_window(self.dead_after) < 2 * parse_window(self.heartbeat):
            raise ValueError("dead_after must be at least twice the heartbeat, or a busy "
                             "gateway would be taken for dead")
        return self


# Runs of letters, counted by their lengths: half the work of a match per letter.
_CYRILLIC = re.compile(r"[\u0400-\u04ff]+")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]+")
# Share of Cyrillic among the letters from which a message counts as Russian: an English
# error message pasted into a Russian mail must not make it English.
CYRILLIC_SHARE = 0.3


def judge_language(*texts: str | None) -> str | None:
    """"ru" for mostly Cyrillic script, "en" for other letters, None without letters."""
    text = " ".join(t for t in texts if t)
    cyrillic = sum(map(len, _CYRILLIC.findall(text)))
    latin = sum(map(len, _LATIN.findall(text)))
    if not cyrillic and not latin:
        return None
    return "ru" if cyrillic >= CYRILLIC_SHARE * (cyrillic + latin) else "en"


@lru_cache(maxsize=64)
def _texts_of(language: str, overrides: tuple[tuple[str, str], ...]) -> Texts:
    # Asked for several times per message (rules, notifications): built once. Texts is
    # frozen, so one copy serves every caller.
    return TEXTS[language].model_copy(update=dict(overrides))


class ApiConfig(Section):
    """The staff HTTP API (gateway/api.py): served by `helpgate run` when enabled."""
    enabled: bool = False
    # Loopback by default: put a TLS-terminating proxy in front to reach it from elsewhere.
    host: str = "127.0.0.1"
    port: ListenPort = 8480
    # Requests per minute one token may make (a burst of as many); 0: no limit.
    rate_limit: int = Field(default=600, ge=0)
    # The largest request body accepted, in bytes.
    max_body_size: int = Field(default=10 * 1024 * 1024, ge=1024)


class Config(Section):
    # Customer-facing texts: "auto" (each customer's language, judged from their own
    # messages), or always "ru" or "en".
    language: Literal["auto", "ru", "en"] = "auto"
    # The language where "auto" has nothing to judge by (no letters at all).
    fallback_language: Literal["ru", "en"] = "en"
    database: DatabaseConfig = DatabaseConfig()
    mail: MailConfig = MailConfig()
    vk: VkConfig = VkConfig()
    threading: ThreadingConfig = ThreadingConfig()
    reopen: ReopenConfig = ReopenConfig()
    statuses: StatusConfig = StatusConfig()
    tickets: TicketConfig = TicketConfig()
    notifications: NotificationConfig = NotificationConfig()
    outbox: OutboxConfig = OutboxConfig()
    telegram: TelegramConfig = TelegramConfig()
    sms: SmsConfig = SmsConfig()
    webform: WebformConfig = WebformConfig()
    api: ApiConfig = ApiConfig()
    # Customer-facing texts override the built-in ones, key by key (in every language).
    texts: dict[str, str] = {}

    @field_validator("texts")
    @classmethod
    def _known_texts(cls, value):
        unknown = set(value) - set(Texts.model_fields)
        if unknown:
            raise ValueError(f"unknown text keys {sorted(unknown)}; known: "
                             f"{sorted(Texts.model_fields)}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self):
        known = {s.id for s in self.statuses.states}
        for status in self.notifications.status_changes:
            if status not in known:
                raise ValueError(f"notifications.status_changes names unknown status {status!r}")
        # (The default names the default model's states: a model without them is fine.)
        told = self.notifications.employee_status_changes \
            if "employee_status_changes" in self.notifications.model_fields_set else []
        for status in told:
            if status not in known:
                raise ValueError("notifications.employee_status_changes names unknown "
                                 f"status {status!r}")
        for rule in self.reopen.rules:
            if rule.type is not None and rule.type not in self.tickets.types:
                raise ValueError(f"reopen rule type {rule.type!r} is not one of "
                                 f"tickets.types {self.tickets.types}")
        telegram_type = self.telegram.ticket_type
        if telegram_type is not None and telegram_type not in self.tickets.types:
            raise ValueError(f"telegram.ticket_type {telegram_type!r} is not one of "
                             f"tickets.types {self.tickets.types}")
        return self

    @model_validator(mode="after")
    def _sms_statuses(self):
        known = {s.id for s in self.statuses.states}
        for status in self.sms.status_changes:
            if status not in known:
                raise ValueError(f"sms.status_changes names unknown status {status!r}")
        return self

    @model_validator(mode="after")
    def _webform_type(self):
        kind = self.webform.ticket_type
        if kind is not None and kind not in self.tickets.types:
            raise ValueError(f"webform.ticket_type {kind!r} is not one of tickets.types "
                             f"{self.tickets.types}")
        return self

    @property
    def staff_language(self) -> str:
        """The language staff notifications are written in: the configured one, or the
        fallback with "auto" (the team's language is not judged from a customer's)."""
        return self.fallback_language if self.language == "auto" else self.language

    def customer_language(self, *texts: str | None) -> str:
        """The language to write to a customer in, judged from their own words."""
        if self.language != "auto":
            return self.language
        return judge_language(*texts) or self.fallback_language

    def text(self, language: str | None = None) -> Texts:
        """The texts of `language` (default: the configured one), with the overrides."""
        language = language or self.language
        if language not in TEXTS:
            language = self.fallback_language
        return _texts_of(language, tuple(self.texts.items()))

    def status_name(self, status_id: str, language: str | None = None) -> str:
        state = self.statuses.states_by_id().get(status_id)
        if state is None:
            return status_id
        language = language or self.language
        if language not in TEXTS:
            language = self.fallback_language
        return state.names.get(language) or state.names.get("en") or status_id
