"""JSON extraction from model text, with hypothesis generating the objects and the damage."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractor.errors import ParseError
from extractor.jsonrepair import drop_placeholders, extract_json

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False, allow_infinity=False, width=64)
           | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
objects = st.dictionaries(keys, values, max_size=6)
# Prose a model writes around its answer: no braces or backticks (those would be JSON/fences).
prose = st.text(st.sampled_from(list("abcdefghij XYZ.,:;!?'\"\n-()0123456789")), max_size=40)


def _expected(obj):
    """What the object reads back as: floats as Decimal of their printed form."""
    return json.loads(json.dumps(obj), parse_float=Decimal)


@SETTINGS
@given(objects, prose, prose, st.sampled_from(["none", "json", "plain", "unclosed"]), st.booleans())
def test_any_object_is_recovered_from_prose_and_fences(obj, before, after, fence, indent):
    text = json.dumps(obj, indent=1 if indent else None, ensure_ascii=bool(len(before) % 2))
    if fence == "json":
        text = f"```json\n{text}\n```"
    elif fence == "plain":
        text = f"```\n{text}\n```"
    elif fence == "unclosed":
        text = f"```json\n{text}"
    assert extract_json(f"{before}\n{text}\n{after}") == _expected(obj)


flat_values = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
               | st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False)
               | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=15))


def _member(key, value) -> str:
    return f"{json.dumps(key)}: {str(value) if isinstance(value, Decimal) else json.dumps(value)}"


@SETTINGS
@given(st.dictionaries(keys, flat_values, min_size=1, max_size=8), st.data())
def test_truncation_at_a_member_boundary_keeps_every_complete_member(obj, data):
    items = list(obj.items())
    k = data.draw(st.integers(1, len(items)), label="members before the cut")
    tail = data.draw(st.sampled_from(["", ",", ", ", ",\n  "]), label="tail")
    text = "{" + ", ".join(_member(key, v) for key, v in items[:k]) + tail
    expected = dict(items[:k])
    last = items[k - 1][1]
    if tail == "" and isinstance(last, (int, Decimal)) and not isinstance(last, bool):
        del expected[items[k - 1][0]]  # '12' at the very end may be the start of '123'
    if not expected:  # cut before any complete member
        with pytest.raises(ParseError, match="cut off"):
            extract_json(text)
    else:
        assert extract_json("Here is the JSON: " + text) == expected


@SETTINGS
@given(st.dictionaries(keys, flat_values, min_size=1, max_size=8), st.data())
def test_truncation_anywhere_never_invents_or_alters_a_value(obj, data):
    members = [_member(key, v) for key, v in obj.items()]
    full = "{" + ", ".join(members) + "}"
    cut = data.draw(st.integers(1, len(full)), label="cut")
    try:
        got = extract_json(full[:cut])
    except ParseError as exc:
        assert "cut off" in str(exc)
        got = {}
    assert set(got.items()) <= set(obj.items())
    # every member whose value ended before the cut (with a character after it) is kept
    pos = 1
    for (key, value), member in zip(obj.items(), members, strict=False):
        pos += len(member)
        if pos < cut:
            assert got.get(key, "missing") == value
        pos += 2


@SETTINGS
@given(objects)
def test_python_literals_and_single_quotes(obj):
    def to_python(value):
        if isinstance(value, float):
            return Decimal(repr(value)) if value == value else value
        if isinstance(value, dict):
            return {k: to_python(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_python(v) for v in value]
        return value

    # repr() writes None/True/False and single-quoted strings with Python escapes
    assert extract_json("result = " + repr(obj)) == to_python(obj)


@SETTINGS
@given(objects)
def test_trailing_commas(obj):
    def dump(value):
        if isinstance(value, dict):
            return "{" + "".join(f"{json.dumps(k)}: {dump(v)}, " for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + "".join(f"{dump(v)}," for v in value) + "]"
        return json.dumps(value)

    assert extract_json(dump(obj)) == _expected(obj)


def test_several_objects_take_the_first_complete_one():
    assert extract_json('{"a": 1}\n{"b": 2}') == {"a": 1}
    assert extract_json('Example: {bad json here} Answer: {"total": "7.00"}') == {"total": "7.00"}
    assert extract_json('```\nnot json\n```\n{"x": [1, 2]}') == {"x": [1, 2]}


def test_truncated_nested_values_are_dropped_not_guessed():
    text = '{"store_name": "SHOP", "total": 12.3'
    assert extract_json(text) == {"store_name": "SHOP"}
    text = '{"a": "x", "line_items": [{"name": "Pen", "line_total": 3}, {"name": "Ink", "line_tot'
    assert extract_json(text) == {"a": "x", "line_items": [{"name": "Pen", "line_total": 3}]}
    with pytest.raises(ParseError, match="cut off"):
        extract_json('{"store_name": "SANYU STAT')


def test_an_object_cut_before_any_member_is_a_parse_error():
    for text in ('{"store_name": "SANYU', "```json\n{", '{"total": 12'):
        with pytest.raises(ParseError, match="cut off"):
            extract_json(text)


def test_a_fenced_block_cut_by_backticks_inside_a_string_falls_back_to_the_whole_text():
    text = '```json\n{"note": "use ``` fences", "total": "1.00"}\n```'
    assert extract_json(text) == {"note": "use ``` fences", "total": "1.00"}


def test_missing_commas_and_unquoted_keys():
    assert extract_json('{store_name: "A" "total": 2}') == {"store_name": "A", "total": 2}


@pytest.mark.parametrize("text", ["", "   ", "I could not read the receipt.", "[1, 2, 3]", "{ not json",
                                  "{{{{"])
def test_nothing_usable_raises_parse_error_with_the_raw_text(text):
    with pytest.raises(ParseError) as info:
        extract_json(text)
    assert info.value.raw_text == text


def test_placeholders_become_none():
    assert drop_placeholders({"a": "N/A", "b": [" null ", "x"], "c": {"d": ""}, "e": "Not found."}) == {
        "a": None, "b": [None, "x"], "c": {"d": None}, "e": None}


@pytest.mark.parametrize("text", ['{"a": -', '{"a": +', '{"a": .'])
def test_output_cut_after_a_sign_is_truncation_not_garbage(text):
    with pytest.raises(ParseError, match="cut off"):
        extract_json(text)
    assert extract_json('{"k": "v", ' + text[1:]) == {"k": "v"}
