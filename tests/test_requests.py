"""Requests as callers give them (a JSON-style dict, keyword arguments, a SendRequest) become
the same SendRequest, or one sentence (exit 1): never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_magic._requests import as_request, make_request, request_from_dict
from smtp_magic.errors import ExitCode, InvalidRequest
from smtp_magic.models import Attachment, Response, SendRequest, as_address_list, assembler

ADDRESS = st.sampled_from(["a@example.test", " b@example.test ", "a@example.test, c@example.test",
                           "d@example.test; e@example.test", '"Doe, J" <j@example.test>', "", " , ",
                           "Ann <ann@example.test>"])
VALUE = st.one_of(st.none(), ADDRESS, st.lists(ADDRESS, max_size=3), st.tuples(ADDRESS),
                  st.integers(), st.just(()), st.just([3]))
HEADERS = st.one_of(st.none(), st.just(()), st.just([]), st.integers(),
                    st.dictionaries(st.sampled_from(["X-A", "X-B"]), st.text(max_size=5), max_size=2),
                    st.lists(st.tuples(st.sampled_from(["X-A", "X-B"]), st.text(max_size=5)),
                             max_size=2),
                    st.just(["X-Note"]), st.just([("X-A", "1", "2")]))
FIELDS = st.fixed_dictionaries(
    {"to": VALUE, "subject": st.one_of(st.text(max_size=10), st.none(), st.integers())},
    optional={"cc": VALUE, "bcc": VALUE, "reply_to": VALUE, "headers": HEADERS,
              "body": st.text(max_size=20), "content_type": st.sampled_from([None, "text/html", 3]),
              "attachments": st.sampled_from([(), [], None])},
)


def expected(fields: dict[str, Any]) -> SendRequest:
    """What the fields make, by the documented rules, computed field by field."""
    headers = fields.get("headers") or ()
    return SendRequest(
        to=as_address_list(fields["to"]), subject=fields["subject"], body=fields.get("body", ""),
        cc=as_address_list(fields.get("cc")), bcc=as_address_list(fields.get("bcc")),
        reply_to=as_address_list(fields.get("reply_to")),
        headers=tuple(headers.items() if isinstance(headers, dict) else headers),
        content_type=fields.get("content_type"),
    )


@settings(max_examples=600, deadline=None)
@given(FIELDS)
def test_every_form_of_a_request_is_the_same_request_or_one_sentence(fields):
    as_json = {"action": "send", **{("content-type" if k == "content_type" else k): v
                                    for k, v in fields.items()}}
    outcomes = []
    for make in (lambda: make_request(**fields), lambda: as_request(fields)[0],
                 lambda: request_from_dict(as_json)[0], lambda: as_request(as_json)[0]):
        try:
            outcomes.append(make())
        except InvalidRequest as exc:
            outcomes.append(str(exc))
    assert len(set(map(repr, outcomes))) == 1, outcomes
    if isinstance(outcomes[0], SendRequest):
        assert outcomes[0] == expected(fields)
        assert vars(outcomes[0]) == vars(expected(fields))  # made in one go: the same fields
        for name in ("to", "cc", "bcc", "reply_to", "headers", "attachments", "inline_images"):
            assert type(getattr(outcomes[0], name)) is tuple
        for address in outcomes[0].recipients + outcomes[0].reply_to:  # one address each
            assert address and address == address.strip() and (";" not in address), address


class Column:
    """A pandas Series in the ways that matter here: iterable, and no truth value."""

    def __init__(self, values: list[str]) -> None:
        self.values = values

    def __iter__(self):
        return iter(self.values)

    def __bool__(self) -> bool:
        raise ValueError("The truth value of a Series is ambiguous.")


def test_addresses_and_attachments_may_be_any_iterable_even_without_a_truth_value():
    request = make_request(to=Column(["a@example.test", "b@example.test"]), subject="s",
                           cc=Column([]), attachments=[Attachment.from_bytes("a.txt", b"x")])
    assert request.to == ("a@example.test", "b@example.test") and request.cc == ()
    assert [a.filename for a in request.attachments] == ["a.txt"]
    with pytest.raises(InvalidRequest, match="Cannot attach the value of type Column"):
        make_request(to="a@example.test", subject="s", attachments=Column([]))  # one object
    again = SendRequest(to=Column(["a@example.test"]), subject="s", headers=Column([("X-A", "1")]))
    assert again.to == ("a@example.test",) and again.headers == (("X-A", "1"),)


@pytest.mark.parametrize(("fields", "sentence"), [
    ({"headers": 3}, "'headers' must map header names to values, not int."),
    ({"headers": [("X-A", "1", "2")]}, "'headers' must map header names (text) to values"),
    ({"cc": 3}, "'cc' must be an address or a list of addresses, not int."),
    ({"content_type": 3}, "The content type must be text, not int."),
    ({"template": True}, "'template' can only be false"),
    ({"subjet": "x"}, "Unknown request parameter 'subjet'"),
])
def test_wrong_values_are_one_sentence(fields, sentence):
    with pytest.raises(InvalidRequest) as caught:
        as_request({"to": "a@example.test", "subject": "s", "action": "send", **fields})
    assert sentence in str(caught.value)


def test_an_assembler_makes_a_default_factory_s_value_for_each_object():
    make = assembler(Response)  # (the values in their final form: __post_init__ is not run)
    first, second = make(exitcode=ExitCode.SENT, result="sent"), make(exitcode=ExitCode.SENT)
    assert first == Response(exitcode=ExitCode.SENT) and list(vars(first)) == list(
        vars(Response(exitcode=ExitCode.SENT)))  # the fields in their order
    assert first.refused == second.refused == {} and first.refused is not second.refused
    assert make(exitcode=ExitCode.SENT, refused={"a": 1}).refused == {"a": 1}
