"""The decision result printed by `helpgate ingest` and stored on the inbound row."""

from dataclasses import fields

from helpgate.gateway.pipeline import Result
from helpgate.threading.context import Action


def test_as_dict_has_every_field_and_plain_values():
    result = Result(action=Action.COMMENT, ticket=3, rules=["subject_marker"], inbound=9)
    as_dict = result.as_dict()
    # The JSON contract of `ingest`; `undecided` only steers the pipeline (never printed).
    assert list(as_dict) == [f.name for f in fields(Result) if f.name != "undecided"]
    assert as_dict["action"] == "comment" and type(as_dict["action"]) is str
    assert as_dict["rules"] == ["subject_marker"] and as_dict["rules"] is not result.rules
