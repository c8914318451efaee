"""The interest language: what parses, what is refused, and where the fault is."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import UsageError
from digest.rank.query import (
    AllOf,
    AnyOf,
    InterestError,
    Phrase,
    Term,
    Without,
    parse_interest,
    parse_written,
    positive_words,
)


def test_all_words_phrase_prefix_field_weight() -> None:
    interest = parse_interest('title:transformer "federated learning" diffus* -survey ^2.5')
    assert interest.weight == 2.5
    assert interest.query == AllOf(
        (
            Term("transformer", "title"),
            Phrase("federated learning"),
            Term("diffus", prefix=True),
            Without(Term("survey")),
        )
    )


def test_or_binds_tighter_than_and_and_groups_take_a_field() -> None:
    assert parse_interest("a b OR c").query == AllOf((Term("a"), AnyOf((Term("b"), Term("c")))))
    assert parse_interest("abstract:(x OR y)").query == AnyOf(
        (Term("x", "abstract"), Term("y", "abstract"))
    )
    assert parse_interest("NOT survey llm").query == AllOf((Without(Term("survey")), Term("llm")))


def test_spacing_is_folded_so_duplicates_meet() -> None:
    assert parse_interest("  federated   learning ").text == "federated learning"


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("foo (bar", "unclosed parenthesis", 5),
        ("foo )", "unmatched closing parenthesis", 5),
        ('x "abc', "unclosed quote", 3),
        ("foo OR", "dangling OR", 5),
        ("OR foo", "dangling OR", 1),
        ("foo NOT", "dangling NOT", 5),
        ("foo -", "dangling exclusion", 5),
        ("", "empty interest", 1),
        ("-survey", "only exclusions", 1),
        ("NOT a NOT b", "only exclusions", 1),
        ("a OR -b", "alternative cannot be only an exclusion", 6),
        ("foo ^0", "bad weight", 5),
        ("foo ^-1", "bad weight", 5),
        ("foo ^x", "bad weight", 5),
        ("foo ^2 bar", "a weight must come last", 5),
        ("author:smith", "unknown field 'author'", 1),
        ("a*b", "wildcard is only allowed at the end", 2),
        ("ab*", "prefix needs one word", 1),
        ("()", "empty parentheses", 1),
        ('""', "empty phrase", 1),
    ],
)
def test_malformed_interests_name_the_fault(text: str, reason: str, position: int) -> None:
    with pytest.raises(InterestError) as caught:
        parse_interest(text)
    assert reason in caught.value.reason
    assert caught.value.position == position
    assert str(caught.value).endswith(f"at position {position}")


def test_error_message_and_exit_code() -> None:
    with pytest.raises(UsageError) as caught:
        parse_interest("foo (bar")
    assert str(caught.value) == "interest 'foo (bar': unclosed parenthesis at position 5"
    assert caught.value.exit_code == 2


def test_positive_words_leave_exclusions_out() -> None:
    assert positive_words('"graph neural" segmenta* -survey') == ["graph", "neural", "segmenta*"]


@pytest.mark.parametrize(
    ("text", "word", "position"),
    [
        ("gan or diffusion", "or", 5),
        ("llm not survey", "not", 5),
        ("speech and translation", "and", 8),
        ("title:(vision Or language)", "Or", 15),
    ],
)
def test_operators_in_lower_case_are_refused_where_they_are_written(
    text: str, word: str, position: int
) -> None:
    with pytest.raises(InterestError) as caught:
        parse_written(text)
    assert caught.value.position == position
    assert f"'{word}' would be matched as a word, not as an operator" in str(caught.value)
    parse_interest(text)  # one saved before the rule still ranks


@pytest.mark.parametrize(
    "text", ['"trial and error"', "gan OR diffusion", "llm NOT survey", "oracle notation andante"]
)
def test_operators_written_as_such_and_words_that_hold_them_pass(text: str) -> None:
    assert parse_written(text) == parse_interest(text)


def test_subscribe_refuses_a_lower_case_or_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from digest.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    assert main(["subscribe", "a@example.org", "--interest", "gan or diffusion"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "position 5" in err and "OR" in err
    assert main(["search", "gan or diffusion"]) == 2
    assert "position 5" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
