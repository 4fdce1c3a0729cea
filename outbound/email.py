"""Email delivery through the admin's SMTP relay (aiosmtplib): STARTTLS or implicit TLS,
AUTH when configured.

The outbox row already holds what to say (outbound/compose.py: marker, separator, quoted
history, threading headers); this module turns it into MIME — a text/plain part always,
an HTML alternative when the admin gave a design template — and maps the relay's answer
onto the outbox's outcomes: 2xx delivered, 4xx and network trouble temporary, 5xx parked.
The envelope sender is our own address, so bounces come back to us and are recorded
against the message (R-TH-8).

A relay with auth = "oauth2" (Microsoft 365, Google, Yandex) gets AUTH XOAUTH2 with an
access token from the gateway's token broker (gateway/oauth.py, handed over through
`use_tokens`). A refused token is refreshed once and tried again; refused again, the
grant is reported as needing a login, and the message waits in the outbox (a temporary
failure) instead of being parked: it goes out once someone has logged in again.
"""

from __future__ import annotations

import html
import logging
import ssl
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

import aiosmtplib

from helpgate.config.oauth import GrantNeedsLogin, TokenUnavailable
from helpgate.config.schema import Config
from helpgate.outbound import headers
from helpgate.outbound.attachments import mime_type, safe_filename
from helpgate.outbound.base import Outgoing
from helpgate.ticketstore.outbox import DeliveryResult

log = logging.getLogger("helpgate.email")
CONTENT_SLOT = "{{{CONTENT}}}"
# Headers composed with the notification that go onto the mail as they are.
PASSED_HEADERS = ("Reply-To", "In-Reply-To", "References", "Auto-Submitted",
                  "X-Helpgate-Ticket")
# Lists of Message-IDs: only well-formed ones go out (a customer's may be broken).
ID_HEADERS = ("In-Reply-To", "References")


class TemplateError(ValueError):
    """The HTML design template cannot be used."""


def load_template(path: str) -> str | None:
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"mail.html_template: cannot read {path}: {exc.strerror}") from exc
    if CONTENT_SLOT not in text:
        raise TemplateError(f"mail.html_template: {path} has no {CONTENT_SLOT} slot")
    return text


def transport(config: Config) -> EmailTransport | None:
    """The email transport, when a relay is configured ([mail.smtp] host)."""
    return EmailTransport(config) if config.mail.smtp.host else None


class EmailTransport:
    channel = "email"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.relay = config.mail.smtp
        self.template = load_template(config.mail.html_template)
        self._tls = self._tls_context()
        # The token broker (channels/base.py AccessTokens) for auth = "oauth2".
        self.tokens = None

    def use_tokens(self, tokens) -> None:
        """The gateway hands its token broker to every transport that asks for one."""
        self.tokens = tokens

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.relay.security == "none":
            return None
        context = ssl.create_default_context(cafile=self.relay.ca_file or None)
        if not self.relay.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def build(self, message: Outgoing) -> EmailMessage:
        """The MIME message. Every header value is cleaned and encoded in
        outbound/headers.py, so no value stored in the row can stop delivery."""
        mail = self.config.mail
        # An internationalised address (RFC 6531/6532) travels as UTF-8, not encoded words.
        international = not _ascii(message.recipient, mail.address)
        mime = EmailMessage(policy=headers.POLICY.clone(utf8=True) if international
                            else headers.POLICY)
        name, address = _sender(message.headers.get("From"), mail.display_name, mail.address)
        headers.set_address(mime, "From", name, address)
        mime["To"] = headers.clean(message.recipient)
        headers.set_header(mime, "Subject", message.subject or "")
        mime["Date"] = formatdate(usegmt=True)
        own = headers.message_ids([message.message_id])
        mime["Message-ID"] = own[0] if own else make_msgid(domain=mail.message_id_domain)
        for name in PASSED_HEADERS:
            value = message.headers.get(name)
            if name in ID_HEADERS:
                value = " ".join(headers.message_ids((value or "").split()))
            if value:
                _structured(mime, name, headers.clean(value))
        mime.set_content(message.text)
        markup = message.html or self._render(message.text)
        if markup:
            mime.add_alternative(markup, subtype="html")
        for item in message.attachments:
            maintype, subtype = mime_type(item.content_type)
            mime.add_attachment(item.data, maintype=maintype, subtype=subtype,
                                filename=safe_filename(item.filename))
        return mime

    def _render(self, text: str) -> str | None:
        if self.template is None:
            return None
        body = html.escape(text).replace("\n", "<br>\n")
        return self.template.replace(CONTENT_SLOT, body)

    async def send(self, message: Outgoing) -> DeliveryResult:
        relay = self.relay
        options = [] if _ascii(message.recipient, self.config.mail.address) else ["SMTPUTF8"]
        data = self.build(message).as_bytes()
        if relay.auth == "oauth2":
            return await self._send_with_token(data, message.recipient, options)
        return await self._send(data, message.recipient, options,
                                username=relay.username or None,
                                password=relay.password or None)

    async def _send_with_token(self, data: bytes, recipient: str,
                               options: list[str]) -> DeliveryResult:
        relay = self.relay
        grant = relay.grant_name
        if self.tokens is None:
            return DeliveryResult.retry('auth = "oauth2" but the transport was given no '
                                        "access tokens")
        rejected = refusal = None
        for _ in range(2):
            try:
                token = await self.tokens.token(grant, rejected=rejected)
            except (GrantNeedsLogin, TokenUnavailable) as exc:
                return DeliveryResult.retry(str(exc))

            async def current(token=token) -> str:
                return token

            try:
                return await self._send(data, recipient, options, username=relay.username,
                                        oauth_token_generator=current)
            except aiosmtplib.SMTPAuthenticationError as exc:
                refusal = f"{exc.code} {exc.message}"
                log.warning("relay %s refused the access token of %s (%s); refreshing it",
                            relay.host, grant, refusal)
                rejected = token
        await self.tokens.refused(grant, f"the SMTP relay {relay.host} refused a fresh "
                                         f"access token: {refusal}")
        return DeliveryResult.retry(f"relay {relay.host}:{relay.port} refused the access "
                                    f"token of {grant} ({refusal}); run: helpgate oauth "
                                    f"login {grant}")

    async def _send(self, data: bytes, recipient: str, options: list[str],
                    **auth) -> DeliveryResult:
        relay = self.relay
        try:
            await aiosmtplib.send(
                data, sender=self.config.mail.address,
                recipients=[recipient], mail_options=options,
                hostname=relay.host, port=relay.port,
                use_tls=relay.security == "tls", start_tls=relay.security == "starttls",
                tls_context=self._tls, timeout=relay.timeout, **auth)
        except aiosmtplib.SMTPAuthenticationError as exc:
            if "oauth_token_generator" in auth:
                raise  # a refused token: _send_with_token refreshes it
            return _by_code(exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported as exc:
            return DeliveryResult.failed(f"relay {relay.host}:{relay.port} cannot take this "
                                         f"mail: {exc} (an internationalised address needs "
                                         "a relay that offers SMTPUTF8)")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return _by_code(exc.recipients[0].code, exc.recipients[0].message)
        except aiosmtplib.SMTPResponseException as exc:
            return _by_code(exc.code, exc.message)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            return DeliveryResult.retry(f"relay {relay.host}:{relay.port}: "
                                        f"{type(exc).__name__}: {exc}")
        return DeliveryResult.ok()

    async def close(self) -> None:
        """Each send opens its own connection: nothing to close."""


def _ascii(*addresses: str) -> bool:
    return all(address.isascii() for address in addresses)


def _structured(mime: EmailMessage, name: str, value: str) -> None:
    """An address or token header; one the parser refuses is left out, never the mail."""
    try:
        mime[name] = value
    except (ValueError, TypeError, IndexError) as exc:
        log.warning("left out header %s %r: %s", name, value, exc)


def _sender(value: str | None, name: str, address: str) -> tuple[str, str]:
    """The From of a row (display name decoded: rows keep it as formataddr wrote it),
    or the configured one."""
    if not value:
        return name, address
    name, address = parseaddr(value)
    if "=?" in name:
        name = str(make_header(decode_header(name)))
    return name, address


def _by_code(code: int, text: str) -> DeliveryResult:
    error = f"relay answered {code} {text}".strip()
    # 5xx is permanent (RFC 5321 §4.2.1); anything else is worth another try.
    return DeliveryResult.failed(error) if 500 <= code < 600 else DeliveryResult.retry(error)
