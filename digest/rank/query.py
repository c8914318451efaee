"""The interest language: one expression per interest, parsed to a small AST.

=========================  ==========================================
``federated learning``     all words, any order
``"federated learning"``   the exact phrase
``diffus*``                prefix
``-survey``, ``NOT survey`` exclude papers with it
``a OR b``, ``( )``        either; OR binds tighter than the implicit AND
``title:x``, ``abstract:`` only in that field (also before a phrase or group)
``… ^2``                   weight of the interest (last, a number > 0)
=========================  ==========================================

Parsing is purely syntactic: words are kept as written and turned into terms by
``digest.rank.match`` with the shared analyzer. A malformed expression raises
``InterestError`` naming the 1-based character position of the fault, so it can
be refused when it is saved rather than discovered at send time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from digest.errors import UsageError
from digest.rank.text import analyze

FIELDS = ("title", "abstract")
MAX_LENGTH = 300  # an interest is a line a reader types, not a document
MIN_PREFIX = 3  # "a*" would match nearly every paper


class InterestError(UsageError):
    """A malformed interest; ``position`` is the 1-based character of the fault."""

    def __init__(self, text: str, reason: str, position: int) -> None:
        self.text = text
        self.reason = reason
        self.position = position
        super().__init__(f"interest {text!r}: {reason} at position {position}")


@dataclass(frozen=True, slots=True)
class Term:
    """A word (``prefix``: the word is a prefix, written ``word*``)."""

    word: str
    field: str | None = None
    prefix: bool = False
    position: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words that must occur in this order, next to each other."""

    words: str
    field: str | None = None
    position: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every item must match."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one item must match."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Without:
    """The item must not match (an exclusion)."""

    item: Node
    position: int = dataclasses.field(default=0, compare=False)


Node = Term | Phrase | AllOf | AnyOf | Without


@dataclass(frozen=True, slots=True)
class Interest:
    """A parsed interest: the expression as written, its AST and its weight."""

    text: str
    query: Node
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # word, phrase, field, (, ), or, not, minus, weight
    value: str
    position: int  # 1-based


_OPERATORS = {"OR": "or", "NOT": "not", "AND": "and"}
_BREAK = ' \t\r\n()"'


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        pos = i + 1
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token(char, char, pos))
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise InterestError(text, "unclosed quote", pos)
            tokens.append(_Token("phrase", text[i + 1 : end], pos))
            i = end + 1
        elif char == "-" and (i + 1 >= n or text[i + 1].isspace()):
            raise InterestError(text, "dangling exclusion", pos)
        elif char == "-":
            tokens.append(_Token("minus", char, pos))
            i += 1
        else:
            end = i
            while end < n and text[end] not in _BREAK:
                end += 1
            tokens.extend(_word_tokens(text, text[i:end], pos))
            i = end
    return tokens


def _word_tokens(text: str, word: str, pos: int) -> list[_Token]:
    """Split one blank-delimited word into field, word and weight tokens."""
    out: list[_Token] = []
    if word in _OPERATORS:
        return [_Token(_OPERATORS[word], word, pos)]
    name, colon, rest = word.partition(":")
    if colon and name and not name.startswith("^"):
        if name.casefold() not in FIELDS:
            raise InterestError(text, f"unknown field {name!r} (use title: or abstract:)", pos)
        out.append(_Token("field", name.casefold(), pos))
        pos += len(name) + 1
        word = rest
    body, caret, weight = word.partition("^")
    if body:
        out.append(_Token("word", body, pos))
    if caret:
        out.append(_Token("weight", weight, pos + len(body)))
    return out


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.at = 0

    def fail(self, reason: str, position: int) -> InterestError:
        return InterestError(self.text, reason, position)

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def sequence(self, fld: str | None, opened: _Token | None) -> Node:
        items: list[Node] = []
        while (token := self.peek()) is not None and token.kind != ")":
            if token.kind == "and":
                self.take()
                continue
            items.append(self.alternatives(fld))
        if opened is not None:
            if token is None:
                raise self.fail("unclosed parenthesis", opened.position)
            self.take()
            if not items:
                raise self.fail("empty parentheses", opened.position)
        elif token is not None:
            raise self.fail("unmatched closing parenthesis", token.position)
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def alternatives(self, fld: str | None) -> Node:
        items = [self.unary(fld)]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            following = self.peek()
            if following is None or following.kind in (")", "or", "and"):
                raise self.fail("dangling OR", token.position)
            items.append(self.unary(fld))
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def unary(self, fld: str | None) -> Node:
        token = self.take()
        if token.kind in ("minus", "not"):
            following = self.peek()
            if following is None or following.kind in (")", "or", "and"):
                what = "NOT" if token.kind == "not" else "exclusion"
                raise self.fail(f"dangling {what}", token.position)
            return Without(self.unary(fld), token.position)
        return self.atom(token, fld)

    def atom(self, token: _Token, fld: str | None) -> Node:
        if token.kind == "field":
            following = self.peek()
            if following is None or following.kind not in ("word", "phrase", "("):
                raise self.fail(
                    f"field '{token.value}:' needs a word, phrase or group", token.position
                )
            return self.atom(self.take(), token.value)
        if token.kind == "(":
            return self.sequence(fld, token)
        if token.kind == "word":
            return self.word(token, fld)
        if token.kind == "phrase":
            if not analyze(token.value):
                raise self.fail("empty phrase", token.position)
            return Phrase(token.value, fld, token.position)
        if token.kind == "or":
            raise self.fail("dangling OR", token.position)
        if token.kind == ")":
            raise self.fail("unmatched closing parenthesis", token.position)
        raise self.fail("a weight must come last", token.position)

    def word(self, token: _Token, fld: str | None) -> Term:
        word, pos = token.value, token.position
        prefix = word.endswith("*")
        stem = word.rstrip("*")
        if "*" in stem:
            raise self.fail(
                "a wildcard is only allowed at the end of a word", pos + stem.index("*")
            )
        terms = analyze(stem)
        if not terms:
            raise self.fail(f"nothing to match in {word!r}", pos)
        if prefix and (len(terms) != 1 or len(terms[0]) < MIN_PREFIX):
            raise self.fail(f"a prefix needs one word of {MIN_PREFIX}+ letters", pos)
        return Term(stem, fld, prefix, pos)


def _weight(text: str, tokens: list[_Token]) -> float:
    """Take a trailing ``^w`` off tokens and return w (1.0 when absent)."""
    if not tokens or tokens[-1].kind != "weight":
        return 1.0
    token = tokens.pop()
    try:
        weight = float(token.value)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and 0 < weight <= 100):
        raise InterestError(
            text, f"bad weight '^{token.value}' (want a number > 0)", token.position
        )
    return weight


def _positive(node: Node, text: str) -> bool:
    """Whether node needs some word present; alternatives made only of exclusions are refused."""
    if isinstance(node, Term | Phrase):
        return True
    if isinstance(node, Without):
        return False
    if isinstance(node, AllOf):
        return any([_positive(item, text) for item in node.items])
    for item in node.items:
        if not _positive(item, text):
            position = item.position if isinstance(item, Without) else 1
            raise InterestError(text, "an alternative cannot be only an exclusion", position)
    return True


def parse_interest(text: str) -> Interest:
    """Parse one interest expression; raises InterestError with the fault's position."""
    if not text.strip():
        raise InterestError(text, "empty interest", 1)
    if len(text) > MAX_LENGTH:
        raise InterestError(text[:40] + "…", f"longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    tokens = _lex(text)
    weight = _weight(text, tokens)
    if not tokens:
        raise InterestError(text, "nothing to match besides the weight", 1)
    query = _Parser(text, tokens).sequence(None, None)
    if not _positive(query, text):
        raise InterestError(
            text,
            "only exclusions, nothing to match (an exclusion narrows the words beside it,"
            " as in 'diffusion -survey')",
            tokens[0].position,
        )
    # Spacing is folded so that the same interest typed twice is indexed once.
    return Interest(" ".join(text.split()), query, weight)


_LOWER_OPERATORS = {
    "or": "write OR for either word",
    "not": "write NOT or -word to leave a word out",
    "and": "words side by side must all match already; leave it out",
}


def parse_written(text: str) -> Interest:
    """Parse an interest a person writes now (saved, searched, tried), refusing ``or``,
    ``and`` and ``not`` in lower case as a word of their own.

    Such a word is matched as a word, which is never what was meant: ``gan or diffusion``
    asks for papers holding all three. Interests saved before this rule still parse with
    ``parse_interest``, so no reader loses one at send time. Quoted, the word is a phrase's.
    """
    interest = parse_interest(text)
    for token in _lex(text):
        if token.kind == "word" and token.value.casefold() in _LOWER_OPERATORS:
            word = token.value
            advice = _LOWER_OPERATORS[word.casefold()]
            raise InterestError(
                text,
                f"'{word}' would be matched as a word, not as an operator ({advice};"
                ' or put it in quotes as part of a phrase, as in "trial and error")',
                token.position,
            )
    return interest


# Between a reader's interests wherever they are written on one line: CSV and listings.
INTEREST_SEPARATOR = ";"
_NOT_IN_AN_INTEREST = {
    INTEREST_SEPARATOR: "';' separates interests, it cannot be inside one",
    "|": "'|' is not part of the interest language (write OR; separate interests with ';')",
}


def parse_kept(text: str) -> Interest:
    """Parse an interest to be kept on a reader's list (a form, a command, a CSV row, the
    settings file): written now (``parse_written``), and holding no mark that separates
    interests on one line."""
    for mark, reason in _NOT_IN_AN_INTEREST.items():
        if mark in text:
            raise InterestError(text, reason, text.index(mark) + 1)
    return parse_written(text)


def positive_words(text: str) -> list[str]:
    """The words a paper must show for an interest to have a chance, exclusions left out.

    Prefixes keep their ``*``; phrases give their words. Raises ``InterestError``.
    """
    return _words(parse_interest(text).query)


def _words(node: Node) -> list[str]:
    if isinstance(node, Term):
        return [node.word + ("*" if node.prefix else "")]
    if isinstance(node, Phrase):
        return node.words.split()
    if isinstance(node, AllOf | AnyOf):
        return [word for item in node.items for word in _words(item)]
    return []  # Without: what a paper must not show
