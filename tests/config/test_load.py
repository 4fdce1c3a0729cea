"""Config loading (R-CFG-1): the example file is the schema's documentation, errors name
the file, line and key, secrets come from the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from helpgate.config.load import ConfigError, load_config
from helpgate.config.schema import Config, parse_size, parse_window

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "helpgate.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "helpgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_file_loads_to_the_defaults(monkeypatch):
    monkeypatch.delenv("HELPGATE_DATABASE_URL", raising=False)
    assert load_config(EXAMPLE).model_dump() == Config().model_dump()


def _keys(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _keys(annotation)
    return names


def test_example_file_documents_every_key():
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = {key for key in _keys(Config) if f"{key} =" not in text and f"[{key}]" not in text
               and f".{key}]" not in text}
    assert missing == set()


def test_defaults_without_any_file(monkeypatch):
    monkeypatch.delenv("HELPGATE_CONFIG", raising=False)
    monkeypatch.delenv("HELPGATE_DATABASE_URL", raising=False)
    config = load_config()
    assert (config.language, config.fallback_language) == ("auto", "en")
    assert config.database.url.startswith("sqlite")
    assert config.reopen.window_for("question", "email") == (timedelta(days=7), "reopen.default")


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, 'language = "en"\n\n[reopen]\ndefault = "7d"\ndefualt_window = "1d"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}:5: reopen.defualt_window: unknown key")


def test_bad_window_names_the_key(tmp_path):
    path = write(tmp_path, '[reopen]\ndefault = "7x"\n')
    with pytest.raises(ConfigError, match=r":2: reopen.default: '7x' is not a duration"):
        load_config(path)


@pytest.mark.parametrize(("section", "value", "expected"), [
    ("mail.endpoint", "99999", "99999 is not a port: use a number from 0 to 65535"),
    ("mail.endpoint", "-1", "-1 is not a port"),
    ("mail.smtp", "0", "0 is not a port: use a number from 1 to 65535"),
    ("mail.smtp", "70000", "70000 is not a port"),
])
def test_ports_out_of_range_name_the_key(tmp_path, section, value, expected):
    """#15.13: `port = 99999` used to pass and die at bind time with a traceback."""
    path = write(tmp_path, f'language = "en"\n[{section}]\nport = {value}\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}:3: {section}.port: {expected}")


def test_an_imap_port_out_of_range_names_the_mailbox(tmp_path):
    path = write(tmp_path, '[[mail.imap]]\nhost = "imap.example"\nusername = "u"\n'
                 'password = "p"\nport = 100000\n')
    with pytest.raises(ConfigError, match=r":5: mail.imap\[0\].port: 100000 is not a port"):
        load_config(path)


def test_heartbeat_must_fit_dead_after(tmp_path):
    path = write(tmp_path, '[outbox]\nheartbeat = "10s"\ndead_after = "15s"\n')
    with pytest.raises(ConfigError, match=r"outbox: dead_after must be at least twice"):
        load_config(path)


def test_bad_rule_in_a_list_of_tables(tmp_path):
    path = write(tmp_path, '[reopen]\n[[reopen.rules]]\ntype = "incident"\nwindow = "soon"\n')
    with pytest.raises(ConfigError, match=r"reopen.rules\[0\].window"):
        load_config(path)


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    path = write(tmp_path, "language = \n")
    with pytest.raises(ConfigError, match=f"^{path}: not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_secret_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HELPGATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("HG_DB_PASSWORD", "s3cret")
    path = write(tmp_path, '[database]\nurl = "postgresql://hg:${HG_DB_PASSWORD}@db/hg"\n')
    assert load_config(path).database.url == "postgresql://hg:s3cret@db/hg"


def test_missing_secret_names_variable_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("HG_NOPE", raising=False)
    path = write(tmp_path, '[mail]\naddress = "${HG_NOPE}"\n')
    with pytest.raises(ConfigError, match=r":2: mail.address: environment variable HG_NOPE"):
        load_config(path)


def test_environment_overrides(tmp_path, monkeypatch):
    path = write(tmp_path, 'language = "en"\n')
    monkeypatch.setenv("HELPGATE_CONFIG", str(path))
    monkeypatch.setenv("HELPGATE_DATABASE_URL", "sqlite:///elsewhere.db")
    config = load_config()
    assert (config.language, config.database.url) == ("en", "sqlite:///elsewhere.db")


@pytest.mark.parametrize("toml, message", [
    ('[statuses]\ninitial = "new"\n', "initial status 'new' is not one of"),
    ('[statuses]\nwaiting_for_customer = ["later"]\n', "waiting_for_customer status 'later'"),
    ('[[statuses.states]]\nid = "open"\nnext = ["gone"]\n', "refers to unknown status 'gone'"),
    ('[tickets]\ndefault_type = "bug"\n', "default_type 'bug' is not one of"),
    ('[[reopen.rules]]\nwindow = "1d"\n', "needs `type`, `channel` or both"),
    ('[threading]\nmarker = "[#]"\n', "must contain `{number}`"),
    ('[threading]\nrules = ["subject_marker", "nonsense"]\n', "unknown rule 'nonsense'"),
    ('[notifications]\nstatus_changes = ["done"]\n', "unknown status 'done'"),
    ('[texts]\nseperator = "x"\n', "unknown text keys"),
])
def test_inconsistent_settings_are_refused(tmp_path, toml, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, toml))


def test_texts_override_one_key(tmp_path):
    text = 'language = "en"\n[texts]\nseparator = "-- reply above --"\n'
    config = load_config(write(tmp_path, text))
    assert config.text().separator == "-- reply above --"
    assert config.text().ack_subject == "{marker} {subject}"


@pytest.mark.parametrize("value, expected", [
    ("7d", timedelta(days=7)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)), ("0", timedelta(0)), ("forever", None), ("never", None),
])
def test_windows(value, expected):
    assert parse_window(value) == expected


@pytest.mark.parametrize("value", ["", "7", "d7", "-1d", "7 days"])
def test_bad_windows(value):
    with pytest.raises(ValueError):
        parse_window(value)


def test_sizes():
    sizes = (parse_size("10MB"), parse_size("512kb"), parse_size(100))
    assert sizes == (10 * 2**20, 512 * 1024, 100)
    with pytest.raises(ValueError):
        parse_size("lots")
