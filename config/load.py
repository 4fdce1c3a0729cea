"""Loading the TOML config: file, environment, validation with errors an admin can act on.

An admin who mistypes a key must learn which key in which file and on which line is wrong,
in one line, before the gateway touches a single message (R-CFG-1). Secrets never need to
be written into the file: any string value may be `${VARIABLE}`, read from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from helpgate.config.schema import Config

CONFIG_ENV = "HELPGATE_CONFIG"
DATABASE_URL_ENV = "HELPGATE_DATABASE_URL"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A config problem, phrased as the one line the admin needs to fix it."""


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Config from `path`, else $HELPGATE_CONFIG, else the embedded defaults."""
    path = path or os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    source = "<defaults>"
    lines: list[str] = []
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: config is not UTF-8 text") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        lines = text.splitlines()
        data = _expand_env(data, source, lines, ())
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        data.setdefault("database", {})["url"] = url
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, lines)) from None


def _expand_env(value: Any, source: str, lines: list[str], loc: tuple) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, source, lines, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, source, lines, (*loc, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{_where(source, lines, loc)}: {_dotted(loc)}: "
                              f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(substitute, value)


def _describe(exc: ValidationError, source: str, lines: list[str]) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{_where(source, lines, loc)}: {_dotted(loc) or '(top level)'}: {message}{more}"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(source: str, lines: list[str], loc: tuple) -> str:
    line = _line_of(lines, [p for p in loc if isinstance(p, str)])
    return f"{source}:{line}" if line else source


def _line_of(lines: list[str], keys: list[str]) -> int | None:
    """Best-effort line of a key path: tomllib keeps no positions, so scan the text.

    Walks the table headers ([a.b] / [[a.b]]) and `key =` lines, and returns the line of
    the deepest part of the path found, which is what the admin has to look at.
    """
    if not keys:
        return None
    best = None
    table: list[str] = []
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")
    for number, text in enumerate(lines, start=1):
        match = header.match(text)
        if match:
            table = [p.strip().strip("\"'") for p in match.group(1).split(".")]
            if keys[: len(table)] == table:
                best = number
            continue
        match = assign.match(text)
        if match:
            key = match.group(1).strip("\"'")
            path = [*table, key]
            if keys[: len(path)] == path:
                best = number
    return best
