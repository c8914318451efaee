"""Signed link tokens: bound to purpose, subscriber and salt; expiring ones to their expiry."""

from __future__ import annotations

import hashlib

import pytest

from digest.tokens import (
    Verdict,
    check_expiring_token,
    check_paper_token,
    check_token,
    expiring_token,
    link_token,
    paper_token,
    token_id,
    vote_key,
)

KEY = b"k" * 32
SALT = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000
LATER = NOW + 3600


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def test_a_lasting_token_checks_only_for_its_subscriber_purpose_and_salt() -> None:
    token = link_token(KEY, 7, SALT, purpose="manage")
    assert check_token(KEY, token, 7, SALT, purpose="manage")
    assert not check_token(KEY, token, 7, SALT)  # the unsubscribe purpose
    assert not check_token(KEY, token, 8, SALT, purpose="manage")
    assert not check_token(KEY, token, 7, "another salt", purpose="manage")  # salt rotated
    assert not check_token(b"another key", token, 7, SALT, purpose="manage")
    assert not check_token(KEY, _flip(token), 7, SALT, purpose="manage")
    assert not check_token(KEY, token[:-1], 7, SALT, purpose="manage")
    assert not check_token(KEY, "8" + token[1:], 8, SALT, purpose="manage")
    assert not check_token(KEY, token[:-1] + "é", 7, SALT, purpose="manage")  # no TypeError


def test_an_expiring_token_is_valid_until_its_expiry_and_then_expired() -> None:
    token = expiring_token(KEY, 7, SALT, "confirm:n1", LATER)
    assert token.startswith(f"7.{LATER}.")
    assert token_id(token) == 7
    assert check_expiring_token(KEY, token, 7, SALT, "confirm:n1", NOW) is Verdict.VALID
    assert check_expiring_token(KEY, token, 7, SALT, "confirm:n1", LATER) is Verdict.EXPIRED


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("forged signature", lambda t: _flip(t)),
        ("truncated", lambda t: t[:-5]),
        ("no signature", lambda t: t.rpartition(".")[0]),
        ("only the id", lambda t: t.partition(".")[0]),
        ("later expiry", lambda t: t.replace(f".{LATER}.", f".{LATER + 10**6}.")),
        ("expiry with a zero in front", lambda t: t.replace(f".{LATER}.", f".0{LATER}.")),
        ("another subscriber's id", lambda t: "8" + t[1:]),
        ("not ASCII", lambda t: t[:-1] + "é"),
        ("empty", lambda t: ""),
    ],
)
def test_a_changed_expiring_token_never_passes(name: str, change: object) -> None:
    assert callable(change)
    token = expiring_token(KEY, 7, SALT, "confirm:n1", LATER)
    changed = change(token)
    assert changed != token, name
    for ident in (7, 8):
        assert check_expiring_token(KEY, changed, ident, SALT, "confirm:n1", NOW) is (
            Verdict.INVALID
        ), name


def test_an_expiring_token_is_bound_to_purpose_subscriber_salt_and_key() -> None:
    token = expiring_token(KEY, 7, SALT, "confirm:n1", LATER)
    for key, ident, salt, purpose in [
        (KEY, 7, SALT, "confirm:n2"),  # another request of the same subscriber
        (KEY, 7, SALT, "manage"),
        (KEY, 8, SALT, "confirm:n1"),
        (KEY, None, SALT, "confirm:n1"),
        (KEY, 7, "rotated", "confirm:n1"),
        (b"another key", 7, SALT, "confirm:n1"),
    ]:
        assert check_expiring_token(key, token, ident, salt, purpose, NOW) is Verdict.INVALID
    # an expired token of another purpose is not "expired": it is no token of this one
    assert check_expiring_token(KEY, token, 7, SALT, "manage", LATER + 1) is Verdict.INVALID


def test_lasting_and_expiring_tokens_never_pass_for_each_other() -> None:
    lasting = link_token(KEY, 7, SALT, purpose="confirm:n1")
    expiring = expiring_token(KEY, 7, SALT, "confirm:n1", LATER)
    assert check_expiring_token(KEY, lasting, 7, SALT, "confirm:n1", NOW) is Verdict.INVALID
    assert not check_token(KEY, expiring, 7, SALT, purpose="confirm:n1")
    # a lasting token whose purpose imitates the signed expiry is still refused
    imitation = link_token(KEY, 7, SALT, purpose=f"confirm:n1@{LATER}")
    forged = f"7.{LATER}.{imitation.partition('.')[2]}"
    assert forged != expiring
    assert check_expiring_token(KEY, forged, 7, SALT, "confirm:n1", NOW) is Verdict.INVALID


def test_a_paper_token_checks_only_for_its_reader_salt_and_paper() -> None:
    paper = "arxiv:2403.00001"
    token = paper_token(vote_key(KEY, 7, SALT), 7, paper)
    ident, _, signature = token.partition(".")
    assert ident == "7" and len(signature) == 32
    assert check_paper_token(KEY, token, 7, SALT, paper)
    assert not check_paper_token(KEY, token, 7, SALT, "arxiv:2403.00002")
    assert not check_paper_token(KEY, token, 8, SALT, paper)
    assert not check_paper_token(KEY, "8" + token[1:], 8, SALT, paper)
    assert not check_paper_token(KEY, token, 7, "another salt", paper)  # salt rotated
    assert not check_paper_token(b"another key", token, 7, SALT, paper)
    assert not check_paper_token(KEY, _flip(token), 7, SALT, paper)
    assert not check_paper_token(KEY, token[:-1], 7, SALT, paper)
    assert not check_paper_token(KEY, token[:-1] + "é", 7, SALT, paper)  # no TypeError
    # No other link of the reader's is a paper's link, nor the other way round.
    manage = link_token(KEY, 7, SALT, purpose="manage")
    assert not check_paper_token(KEY, manage, 7, SALT, paper)
    assert not check_token(KEY, token, 7, SALT, purpose=f"feedback:up:{paper}")
    assert not check_token(KEY, token, 7, SALT, purpose="manage")
    # A vote key is the reader's own and signs nothing another reader can use.
    assert vote_key(KEY, 7, SALT) != vote_key(KEY, 8, SALT) != vote_key(KEY, 8, "x")
    assert vote_key(KEY, 7, SALT) != vote_key(b"another key", 7, SALT)


def test_a_vote_link_of_a_digest_sent_before_one_token_per_paper_still_votes_its_way() -> None:
    # Those links signed "vote:paper" with the reader's vote key, as below.
    paper = "arxiv:2403.00001"
    old = hashlib.blake2b(f"up:{paper}".encode(), key=vote_key(KEY, 7, SALT), digest_size=16)
    token = f"7.{old.hexdigest()}"
    assert check_paper_token(KEY, token, 7, SALT, paper, "up")
    assert not check_paper_token(KEY, token, 7, SALT, paper, "down")
    assert not check_paper_token(KEY, token, 7, SALT, paper)  # not a paper page's token
    assert not check_paper_token(KEY, token, 7, SALT, "arxiv:2403.00002", "up")
    assert not check_paper_token(KEY, token, 7, "another salt", paper, "up")
