"""The web form's pages and its checks, apart from the server: the form (empty, or again
with the values and a message next to each wrong field), the thank-you page, and what
makes a submission valid.

The pages work without JavaScript: a plain <form method="post">, labels, the browser's
own required/type checks as a first help, and the server's checks as the rule. The CSS
is inline (one request, nothing to host) and fits a phone's width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

from helpgate.config.schema import Texts, WebformConfig, WebformField, format_size

# The hidden field a person never sees; bots fill every field they find.
TRAP = "website"
# The file input's name (several files under one name).
FILES = "files"
_EMAIL = re.compile(r"^[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+$")
# An address is at most 254 characters (RFC 5321), whatever max_field_length says.
MAX_EMAIL = 254

STYLE = """
*{box-sizing:border-box}
body{margin:0;padding:1rem;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1d2330;background:#f4f6f9}
main{max-width:36rem;margin:0 auto;background:#fff;border-radius:.75rem;padding:1.25rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin:0 0 .5rem}
p{margin:.25rem 0 1rem}
label{display:block;font-weight:600;margin:.9rem 0 .25rem}
.optional{font-weight:400;color:#5b6475}
input,textarea,select{width:100%;font:inherit;padding:.6rem .7rem;border:1px solid #b8c0cc;
border-radius:.5rem;background:#fff}
textarea{min-height:9rem;resize:vertical}
input:focus,textarea:focus,select:focus{outline:2px solid #2f6fde;border-color:#2f6fde}
.invalid input,.invalid textarea,.invalid select{border-color:#c62828}
.hint{color:#5b6475;margin:.25rem 0 0;font-size:.9rem}
.error{color:#c62828;margin:.25rem 0 0;font-size:.95rem}
.summary{background:#fdecea;color:#8e1c1c;padding:.6rem .8rem;border-radius:.5rem}
button{margin-top:1.2rem;width:100%;padding:.8rem;font:inherit;font-weight:600;color:#fff;
background:#2f6fde;border:0;border-radius:.5rem;cursor:pointer}
button:hover{background:#2459b8}
.trap{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
@media (min-width:40rem){body{padding:2rem}main{padding:2rem}}
"""


@dataclass
class Submission:
    """What was posted, cleaned, and what is wrong with it (field key -> message)."""

    values: dict[str, str]
    trap: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def check(values: dict[str, str], config: WebformConfig, texts: Texts) -> dict[str, str]:
    """The server's rules for a submission: field key -> what is wrong (empty: valid)."""
    errors: dict[str, str] = {}
    limits = {"name": config.max_field_length, "phone": config.max_field_length,
              "email": min(config.max_field_length, MAX_EMAIL), "text": config.max_text_length}
    for custom in config.fields:
        limits[custom.name] = field_limit(custom, config)
        value = values.get(custom.name, "")
        if custom.required and not value:
            errors[custom.name] = texts.webform_required
        elif value and custom.type == "select" and value not in custom.options:
            errors[custom.name] = texts.webform_bad_option
    for key in ("email", "text"):
        if not values.get(key):
            errors[key] = texts.webform_required
    email = values.get("email", "")
    if email and "email" not in errors and not _EMAIL.match(email):
        errors["email"] = texts.webform_bad_email
    for key, limit in limits.items():
        if len(values.get(key, "")) > limit:
            errors[key] = texts.webform_too_long.format(limit=limit)
    return errors


def check_files(files: list[tuple[str, int]], config: WebformConfig,
                texts: Texts) -> str | None:
    """What is wrong with the files chosen ((filename, size) each), or None."""
    if len(files) > config.max_files:
        return texts.webform_too_many_files.format(limit=config.max_files)
    for filename, size in files:
        if size > config.max_file_size:
            return texts.webform_file_too_big.format(filename=filename,
                                                     limit=format_size(config.max_file_size))
    return None


def field_limit(custom: WebformField, config: WebformConfig) -> int:
    if custom.max_length is not None:
        return custom.max_length
    return config.max_text_length if custom.type == "textarea" else config.max_field_length


def keys(config: WebformConfig) -> tuple[str, ...]:
    """The form's fields in the order shown (and kept): its own, the configured ones
    before the message."""
    return ("name", "email", "phone", *(f.name for f in config.fields), "text")


def labels(texts: Texts, config: WebformConfig | None = None,
           lang: str = "") -> dict[str, str]:
    """Each field's label as shown, the configured fields' in `lang`."""
    names = {"name": texts.webform_name, "email": texts.webform_email,
             "phone": texts.webform_phone, "text": texts.webform_text}
    for custom in config.fields if config is not None else ():
        names[custom.name] = custom.label_for(lang)
    return names


def _page(lang: str, title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def form_page(*, lang: str, texts: Texts, config: WebformConfig, action: str,
              values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
              notice: str | None = None) -> str:
    """The form; with `errors`, each message next to its field and a summary on top."""
    values, errors = values or {}, errors or {}
    names = labels(texts, config, lang)
    optional = {"name", "phone", *(f.name for f in config.fields if not f.required)}

    def described(key: str) -> tuple[str, str, str]:
        """(the wrapper's class, the field's aria attributes, the message's html)."""
        if key not in errors:
            return "field", "", ""
        return ("field invalid", f' aria-invalid="true" aria-describedby="{key}-error"',
                f'<p class="error" id="{key}-error">{escape(errors[key])}</p>')

    def label(key: str) -> str:
        mark = (f' <span class="optional">{escape(texts.webform_optional)}</span>'
                if key in optional else "")
        return f'<label for="{key}">{escape(names[key])}{mark}</label>'

    def line(key: str, kind: str, autocomplete: str, limit: int) -> str:
        wrapper, aria, message = described(key)
        required = "" if key in optional else " required"
        return (f'<div class="{wrapper}">{label(key)}'
                f'<input id="{key}" name="{key}" type="{kind}" autocomplete="{autocomplete}" '
                f'maxlength="{limit}" value="{escape(values.get(key, ""))}"{required}{aria}>'
                f"{message}</div>")

    def custom(field: WebformField) -> str:
        key, limit = field.name, field_limit(field, config)
        if field.type == "text":
            return line(key, "text", "off", limit)
        wrapper, aria, message = described(key)
        required = "" if key in optional else " required"
        value = values.get(key, "")
        if field.type == "textarea":
            control = (f'<textarea id="{key}" name="{key}" rows="4" maxlength="{limit}"'
                       f'{required}{aria}>{escape(value)}</textarea>')
        else:
            choices = "".join(
                f'<option value="{escape(o)}"{" selected" if o == value else ""}>'
                f"{escape(o)}</option>" for o in field.options)
            control = (f'<select id="{key}" name="{key}"{required}{aria}>'
                       f'<option value="">—</option>{choices}</select>')
        return f'<div class="{wrapper}">{label(key)}{control}{message}</div>'

    def files() -> str:
        if not config.max_files:
            return ""
        wrapper, aria, message = described(FILES)
        hint = texts.webform_files_hint.format(count=config.max_files,
                                               size=format_size(config.max_file_size))
        return (f'<div class="{wrapper}"><label for="{FILES}">{escape(texts.webform_files)} '
                f'<span class="optional">{escape(texts.webform_optional)}</span></label>'
                f'<input id="{FILES}" name="{FILES}" type="file"'
                f'{" multiple" if config.max_files > 1 else ""}{aria}>'
                f'<p class="hint">{escape(hint)}</p>{message}</div>\n')

    wrapper, aria, message = described("text")
    top = ""
    if notice:
        top = f'<p class="summary" role="alert">{escape(notice)}</p>'
    elif errors:
        top = f'<p class="summary" role="alert">{escape(texts.webform_errors)}</p>'
    body = (
        f"<h1>{escape(texts.webform_title)}</h1>\n<p>{escape(texts.webform_intro)}</p>\n{top}\n"
        f'<form method="post" action="{escape(action)}" accept-charset="utf-8"'
        # Files need multipart; without them the plain encoding, as ever.
        + (' enctype="multipart/form-data"' if config.max_files else "") + ">\n"
        f'<input type="hidden" name="lang" value="{lang}">\n'
        + line("name", "text", "name", config.max_field_length) + "\n"
        + line("email", "email", "email", min(config.max_field_length, MAX_EMAIL)) + "\n"
        + line("phone", "tel", "tel", config.max_field_length) + "\n"
        + "".join(custom(f) + "\n" for f in config.fields)
        + f'<div class="{wrapper}"><label for="text">{escape(names["text"])}</label>'
          f'<textarea id="text" name="text" rows="7" maxlength="{config.max_text_length}" '
          f'required{aria}>{escape(values.get("text", ""))}</textarea>{message}</div>\n'
        + files()
        # Out of sight and out of the tab order; a person leaves it empty.
        + f'<div class="trap" aria-hidden="true"><label for="{TRAP}">Website</label>'
          f'<input id="{TRAP}" name="{TRAP}" type="text" tabindex="-1" autocomplete="off" '
          f'value=""></div>\n'
        + f'<button type="submit">{escape(texts.webform_send)}</button>\n</form>')
    return _page(lang, texts.webform_title, body)


def thanks_page(*, lang: str, texts: Texts, action: str, number: int | None,
                email: str) -> str:
    """After the submission is stored: its ticket number, or (kept in quarantine, a bot's
    trap) only that it was received."""
    if number is None:
        words = texts.webform_kept
    else:
        words = texts.webform_thanks.format(number=number, email=email)
    body = (f"<h1>{escape(texts.webform_thanks_title)}</h1>\n"
            f'<p role="status">{escape(words)}</p>\n'
            f'<p><a href="{escape(action)}">{escape(texts.webform_title)}</a></p>')
    return _page(lang, texts.webform_thanks_title, body)
