"""The architecture as tests (#15.16, docs/ARCHITECTURE.md): imports follow the flow of a
message, only ticketstore/ speaks SQL, and pyproject.toml declares every third-party
package the code imports.

Both read the source with `ast` — every import counts, including ones inside functions —
so nothing is imported or run."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
COMPONENTS = {package.split(".")[1]: folder for package, folder in
              PYPROJECT["tool"]["setuptools"]["package-dir"].items()}

# (importing component, forbidden prefix, why) — docs/ARCHITECTURE.md, "Who may import whom".
RULES = [
    ("channels", "helpgate.gateway", "channels never import gateway"),
    ("channels", "helpgate.ticketstore", "channels reach the store only through Services"),
    ("channels", "helpgate.outbound", "channels never import outbound"),
    ("outbound", "helpgate.gateway", "outbound never imports gateway"),
    ("outbound", "helpgate.channels", "outbound imports no channel adapter"),
    ("threading", "helpgate.channels", "threading imports no channel"),
    ("threading", "helpgate.ticketstore", "threading imports no ticketstore"),
    ("ticketstore", "helpgate.threading.rules", "ticketstore imports no rules"),
    ("ticketstore", "helpgate.outbound", "ticketstore imports no outbound (the store is below it)"),
]
# Imports that break the rules, each to be removed by moving the shared piece where both
# sides may import it. Listed here so that no new one creeps in; when one is fixed the
# test says so, and the entry goes. None today.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def imports(path: Path) -> set[str]:
    """The modules a file imports. `from a import b` is an import of a, or of a.b when b
    is a module itself (`from helpgate.threading import rules`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if _is_module(f"{node.module}.{alias.name}")}
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; DESIGN.md imports helpgate.…")
    return found


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "helpgate" or len(parts) < 3 or parts[1] not in COMPONENTS:
        return False
    place = ROOT / COMPONENTS[parts[1]] / Path(*parts[2:])
    return place.is_dir() or place.with_suffix(".py").exists()


def source_files(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


# A channel's API client (channels/<name>/api.py) is the one way to its service, used by
# its adapter and by its transport in outbound/.
ALLOWED = [("outbound", re.compile(r"^helpgate\.channels\.[a-z_]+\.api$"))]


def violations() -> set[tuple[str, str]]:
    found = set()
    for component, prefix, _ in RULES:
        allowed = [pattern for who, pattern in ALLOWED if who == component]
        for path in source_files(COMPONENTS[component]):
            found |= {(path.relative_to(ROOT).as_posix(), module) for module in imports(path)
                      if (module == prefix or module.startswith(prefix + "."))
                      and not any(pattern.match(module) for pattern in allowed)}
    return found


def test_imports_follow_the_flow_of_a_message():
    found = violations()
    new = found - KNOWN_EXCEPTIONS
    assert not new, f"imports against docs/ARCHITECTURE.md: {sorted(new)}"
    fixed = KNOWN_EXCEPTIONS - found
    assert not fixed, f"fixed, remove from KNOWN_EXCEPTIONS: {sorted(fixed)}"


def test_the_rule_check_sees_a_violation(tmp_path, monkeypatch):
    """The walker itself: a module of channels importing gateway inside a function."""
    folder = tmp_path / "channels"
    folder.mkdir()
    (folder / "bad.py").write_text("def f():\n    from helpgate.gateway.cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for component in ("outbound", "threading", "ticketstore"):
        (tmp_path / component).mkdir()
    assert violations() == {("channels/bad.py", "helpgate.gateway.cli")}


# Only ticketstore/ builds or runs SQL (docs/ARCHITECTURE.md): elsewhere SQLAlchemy is no
# more than the type of the session a unit of work is handed.
SQL_FREE = ("gateway", "outbound", "channels", "threading", "config")
SQLALCHEMY_ALLOWED = {("sqlalchemy.orm", "Session")}


def sqlalchemy_imports(path: Path) -> set[tuple[str, str | None]]:
    """(module, name) of each SQLAlchemy import of a file: `from sqlalchemy.orm import
    Session` is ("sqlalchemy.orm", "Session"), `import sqlalchemy` ("sqlalchemy", None)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, None) for alias in node.names
                      if alias.name.split(".")[0] == "sqlalchemy"}
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] == "sqlalchemy":
            found |= {(node.module, alias.name) for alias in node.names}
    return found


def sql_outside_the_store() -> set[tuple[str, str]]:
    """(file, what it imports) for every SQLAlchemy import outside ticketstore/ but the
    Session type."""
    found = set()
    for component in SQL_FREE:
        for path in source_files(COMPONENTS[component]):
            found |= {(path.relative_to(ROOT).as_posix(), f"{module}.{name}" if name else module)
                      for module, name in sqlalchemy_imports(path)
                      if (module, name) not in SQLALCHEMY_ALLOWED}
    return found


def test_only_ticketstore_speaks_sql():
    found = sql_outside_the_store()
    assert not found, ("SQLAlchemy outside ticketstore/ (move the statement into a "
                       f"function of ticketstore/): {sorted(found)}")


def test_the_sql_check_sees_a_statement(tmp_path, monkeypatch):
    """The walker itself: a query beside the allowed Session type, and a whole import of
    SQLAlchemy inside a function."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for component in SQL_FREE:
        (tmp_path / COMPONENTS[component]).mkdir()
    (tmp_path / COMPONENTS["gateway"] / "bad.py").write_text(
        "from sqlalchemy.orm import Session, aliased\n"
        "def f(session: Session):\n    import sqlalchemy\n")
    (tmp_path / COMPONENTS["outbound"] / "good.py").write_text(
        "from sqlalchemy.orm import Session\n")
    assert sql_outside_the_store() == {("gateway/bad.py", "sqlalchemy.orm.aliased"),
                                       ("gateway/bad.py", "sqlalchemy")}


def _normalized(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party import names -> the files importing them."""
    names: dict[str, set[str]] = {}
    # A script imports its neighbours by name (bench/imap_ingest.py: `import pipeline`).
    local = {"helpgate", "tests", "__future__"} | {
        path.stem for folder in folders for path in (ROOT / folder).glob("*.py")}
    for path in source_files(*folders):
        for module in imports(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in local:
                names.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return names


def undeclared(names: dict[str, set[str]], declared: list[str]) -> dict[str, list[str]]:
    distributions = packages_distributions()
    wanted = {_normalized(r) for r in declared}
    missing = {}
    for name, files in names.items():
        provided_by = {_normalized(d) for d in distributions.get(name, [name])}
        if not provided_by & wanted:
            missing[name] = sorted(files)
    return missing


def test_pyproject_declares_every_package_the_code_imports():
    declared = PYPROJECT["project"]["dependencies"]
    missing = undeclared(third_party(*COMPONENTS.values()), declared)
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"


def test_tests_and_benchmarks_import_only_declared_packages():
    declared = [*PYPROJECT["project"]["dependencies"],
                *PYPROJECT["project"]["optional-dependencies"]["test"]]
    missing = undeclared(third_party("tests", "bench"), declared)
    assert missing == {}, f"imported by tests or bench but not declared: {missing}"
