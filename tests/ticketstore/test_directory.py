"""The directory (R-TS-2 companies, contacts, employees) through `helpgate directory`:
JSON and TOML files with the same keys, idempotent imports, add/list, and a bad entry that
stops the whole import with its position named and nothing written."""

from __future__ import annotations

import json

import pytest

from helpgate.gateway.cli import main

DIRECTORY = {
    "companies": [{"name": "Romashka LLC", "domains": ["romashka.ru"],
                   "email": "office@romashka.ru", "phone": "+74951234567"}],
    "contacts": [{"name": "Ivan Petrov", "email": "ivan@romashka.ru", "phone": "+79161234567",
                  "company": "Romashka LLC"}],
    "employees": [{"name": "Anna Admin", "email": "anna@helpgate.test",
                   "phone": "+79990000001", "role": "admin"}],
}
TOML = """
[[companies]]
name = "Romashka LLC"
domains = ["romashka.ru"]
email = "office@romashka.ru"
phone = "+74951234567"

[[contacts]]
name = "Ivan Petrov"
email = "ivan@romashka.ru"
phone = "+79161234567"
company = "Romashka LLC"

[[employees]]
name = "Anna Admin"
email = "anna@helpgate.test"
phone = "+79990000001"
role = "admin"
"""


@pytest.fixture
def helpgate(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HELPGATE_CONFIG", raising=False)
    monkeypatch.setenv("HELPGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'hg.db'}")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def listing(helpgate) -> dict:
    """The listing without the rows' ids (which the import does not name)."""
    code, out, _ = helpgate("directory", "list", "--json")
    assert code == 0
    return {kind: [{k: v for k, v in entry.items() if k != "id"} for entry in entries]
            for kind, entries in json.loads(out).items()}


@pytest.mark.parametrize("name, content", [("people.json", json.dumps(DIRECTORY)),
                                           ("people.toml", TOML)])
def test_import_twice_gives_the_same_directory(helpgate, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert helpgate("directory", "import", str(path))[0] == 0
    assert helpgate("directory", "import", str(path))[0] == 0
    assert listing(helpgate) == {
        "companies": [{**DIRECTORY["companies"][0], "domains": ["romashka.ru"]}],
        "contacts": DIRECTORY["contacts"],
        "employees": DIRECTORY["employees"],
    }


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["contacts"][0].update(email="not-an-address"), "contacts[0].email"),
    (lambda d: d["contacts"][0].update(company="Nobody Inc"), "unknown company 'Nobody Inc'"),
    (lambda d: d["employees"][0].update(role="boss"), "employees[0].role"),
    (lambda d: d.update(clients=[]), "clients"),
])
def test_a_bad_entry_imports_nothing(helpgate, tmp_path, mutate, message):
    data = json.loads(json.dumps(DIRECTORY))
    mutate(data)
    path = tmp_path / "people.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    code, out, err = helpgate("directory", "import", str(path))
    assert code == 1 and out == ""
    assert err.startswith("helpgate: error: ") and message in err and err.count("\n") == 1
    assert listing(helpgate) == {"companies": [], "contacts": [], "employees": []}


def test_unreadable_file(helpgate, tmp_path):
    code, _, err = helpgate("directory", "import", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    code, _, err = helpgate("directory", "import", str(tmp_path / "broken.json"))
    assert code == 1 and "not valid JSON" in err


def test_add_entries_one_by_one(helpgate):
    assert helpgate("directory", "add", "company", "--name", "Lyutik", "--domain",
                    "lyutik.ru", "--email", "info@lyutik.ru")[0] == 0
    assert helpgate("directory", "add", "contact", "--name", "Oleg", "--email",
                    "Oleg@Lyutik.ru", "--company", "Lyutik")[0] == 0
    assert helpgate("directory", "add", "employee", "--name", "Boris", "--email",
                    "boris@helpgate.test", "--role", "admin")[0] == 0
    data = listing(helpgate)
    assert data["companies"][0]["domains"] == ["lyutik.ru"]
    assert data["contacts"] == [{"name": "Oleg", "email": "oleg@lyutik.ru", "phone": None,
                                 "company": "Lyutik"}]
    assert data["employees"][0]["role"] == "admin"
    code, _, err = helpgate("directory", "add", "contact", "--name", "X", "--email", "bad")
    assert code == 1 and "is not an email address" in err


def test_a_domain_belongs_to_one_company(helpgate):
    assert helpgate("directory", "add", "company", "--name", "A", "--domain", "a.ru")[0] == 0
    code, _, err = helpgate("directory", "add", "company", "--name", "B", "--domain", "a.ru")
    assert code == 1 and "already belongs to company 'A'" in err
    assert [c["name"] for c in listing(helpgate)["companies"]] == ["A"]


def test_messenger_ids_are_identities_matched_on_reimport(helpgate, tmp_path):
    """telegram_id / vk_id and `identities` give a person ids on messengers; a contact
    known only by one is found by it again (no second contact), and an id another
    contact has stops the import."""
    people = {"contacts": [{"name": "Пётр", "telegram_id": 4200000001,
                            "identities": {"VK": "77"}}],
              "employees": [{"name": "Anna Admin", "email": "anna@helpgate.test",
                             "role": "admin", "identities": {"telegram": "4200000002"}}]}
    path = tmp_path / "people.json"
    path.write_text(json.dumps(people), encoding="utf-8")
    assert helpgate("directory", "import", str(path))[0] == 0
    assert helpgate("directory", "import", str(path))[0] == 0
    assert [c["name"] for c in listing(helpgate)["contacts"]] == ["Пётр"]
    clash = {"contacts": [{"name": "Другой", "email": "other@romashka.ru",
                           "identities": {"vk": "77"}}]}
    path.write_text(json.dumps(clash), encoding="utf-8")
    code, _, err = helpgate("directory", "import", str(path))
    assert code != 0
    assert "vk id 77 already belongs to another contact" in err
    assert [c["name"] for c in listing(helpgate)["contacts"]] == ["Пётр"]
