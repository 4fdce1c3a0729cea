"""`helpgate webform check`: is the `[webform]` set-up sane before people use the form —
the port it listens on, the sites allowed to post it, its fields and file limits.

A malformed key (an origin without a scheme, a select without options, a field named
like one of the form's own) already stops the config from loading, with the key named;
this check looks at what loads but will not work as meant. Nothing is posted and no
ticket is made: the port is only bound for a moment and let go.
"""

from __future__ import annotations

import errno
import os
import socket

from helpgate.channels.base import Finding
from helpgate.config.schema import Config, format_size

BIND_FIXES = {
    errno.EACCES: "ports below 1024 need privileges: set webform.port to 1024 or above",
    errno.EADDRNOTAVAIL: "no interface has that address: check webform.host",
}


async def check(config: Config) -> list[Finding]:
    form = config.webform
    if not form.enabled:
        return [Finding("config", False, "the web form is off",
                        "set [webform] enabled = true in helpgate.toml (README: Web form)")]
    return [_port(form.host, form.port), _origins(form.allowed_origins),
            _fields(config), _files(config), _ticket_type(config)]


def _port(host: str, port: int) -> Finding:
    where = f"{host}:{port}"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            # The running gateway's own form, most likely: not a fault of the set-up.
            return Finding("port", True, f"{where} is in use",
                           "fine if `helpgate run` serves the form there; otherwise stop "
                           "the program that listens, or set another webform.port")
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return Finding("port", False, f"cannot listen on {where}: {reason}",
                       BIND_FIXES.get(exc.errno, "check webform.host and webform.port"))
    return Finding("port", True, f"{where} is free to listen on")


def _origins(origins: list[str]) -> Finding:
    if not origins:
        return Finding("origins", True, "only the form's own page may post it",
                       "list the sites that show or post the form in "
                       "webform.allowed_origins (\"https://www.example.com\")")
    plain = [o for o in origins if o.startswith("http://")
             and not o.startswith(("http://localhost", "http://127."))]
    return Finding("origins", True, f"may post it: the form's own page, {', '.join(origins)}",
                   f"{', '.join(plain)} without TLS: people's data would cross the network "
                   "unencrypted; use https" if plain else None)


def _fields(config: Config) -> Finding:
    form = config.webform
    if not form.fields:
        return Finding("fields", True, "name, email, phone and the message (no custom "
                                       "fields)")
    shown = [f"{f.name} ({f.type}{', required' if f.required else ''}"
             + (f": {len(f.options)} options" if f.options else "") + ")" for f in form.fields]
    long = [f.name for f in form.fields if f.max_length is not None
            and f.max_length > form.max_body_size]
    if long:
        return Finding("fields", False, f"max_length of {', '.join(long)} is over "
                                        f"max_body_size ({form.max_body_size} bytes)",
                       "lower the field's max_length or raise webform.max_body_size")
    return Finding("fields", True, "name, email, phone, " + ", ".join(shown)
                   + " and the message")


def _files(config: Config) -> Finding:
    form = config.webform
    if not form.max_files:
        return Finding("files", True, "no file field (webform.max_files = 0)")
    detail = f"up to {form.max_files} files of {format_size(form.max_file_size)} each"
    if form.max_file_size > config.mail.max_attachment_size:
        return Finding("files", False, f"{detail}, but attachments over "
                                       f"{format_size(config.mail.max_attachment_size)} are "
                                       "not stored (mail.max_attachment_size)",
                       "lower webform.max_file_size or raise mail.max_attachment_size")
    return Finding("files", True, detail)


def _ticket_type(config: Config) -> Finding:
    # An unknown type already stops the config from loading: this only says which.
    wanted = config.webform.ticket_type or config.tickets.default_type
    return Finding("ticket_type", True, f"new tickets are of type {wanted}")
