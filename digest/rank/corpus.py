"""The store's term statistics, what BM25 weighs every term by: read from the stored papers
(all of them, or a fixed sample of a large store) for the run, previews and searches alike.

A run keeps the sample's counts in the store, with a fingerprint of each sampled paper's
text (``Kept``). The next reader of the statistics counts only the papers that came into
the sample since and takes out those that left it (a day's papers change a few hundred of
20,000), instead of analyzing the whole sample again: the same counts, as the sample is
chosen by the papers' ids alone (``papers.stats_ids``). Anything it cannot account for (a
sampled paper whose text changed or that is gone, counts of another analyzer) and it
counts the whole sample afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add
from typing import Any

from sqlalchemy.engine import Connection

from digest import forks
from digest.rank.text import DEFAULT
from digest.rank.types import CorpusStats, TermCounts
from digest.store import papers

STATS_SAMPLE = 20_000  # papers whose term frequencies stand for a larger store
PARALLEL_FROM = 5_000  # papers from which a run counts them in processes of their own
MAX_PROCESSES = 2
# Counts kept by a run are brought up to date when at most this share of the sample
# changed; past it, counting afresh costs about the same.
UPDATE_AT_MOST = 0.5


def store_stats(
    conn: Connection, sample: int = STATS_SAMPLE, *, processes: int | None = 1, keep: bool = False
) -> CorpusStats:
    """Term statistics of the whole store: every paper, or a uniform sample of ``sample``.

    BM25 needs only each term's share of documents, which a sample of this size estimates
    within a few percent for every term common enough to matter; rare terms stay rare. The
    sample depends on the store's papers alone, so the same store always ranks the same way.

    ``keep``: write the sample's counts to the store (in this transaction), for the next
    reader to start from (a run does). Counts kept before are used either way.

    ``processes``: how many forked processes count the sample when it is counted whole
    (``None``: by its size). A run counts in processes: besides sharing the cores, the
    analysis of 20,000 papers leaves its garbage in them, not in the process that goes on
    to rank (about 90 MB less there, and so in every ranking worker forked from it). The
    counts add up to the same figures.
    """
    return sample_counts(conn, sample, processes=processes, keep=keep).stats()


@dataclass
class Kept:
    """The counts of a sample, each sampled paper's text fingerprint, and which analyzer
    counted them."""

    analyzer: str
    members: dict[int, str]  # paper id -> fingerprint of its title and abstract
    counts: TermCounts

    def as_json(self) -> str:
        return json.dumps(
            {
                "analyzer": self.analyzer,
                "members": [[ident, mark] for ident, mark in self.members.items()],
                "counts": self.counts.as_json(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def read(cls, text: str | None) -> Kept | None:
        """Counts kept by this analyzer, if ``text`` holds any readable."""
        if not text:
            return None
        try:
            data: Mapping[str, Any] = json.loads(text)
            if data.get("analyzer") != analyzer_mark():
                return None
            members = {int(ident): str(mark) for ident, mark in data["members"]}
            return cls(data["analyzer"], members, TermCounts.from_json(data["counts"]))
        except (ValueError, KeyError, TypeError):
            return None


def sample_counts(
    conn: Connection, sample: int = STATS_SAMPLE, *, processes: int | None = 1, keep: bool = False
) -> TermCounts:
    """The term counts of the store's sample (``store_stats``), from those kept when they
    can be brought up to date."""
    ids = papers.stats_ids(conn, sample)
    texts = papers.stats_texts(conn, ids)
    marks = {ident: fingerprint(*text) for ident, text in texts.items()}
    kept = Kept.read(papers.kept_counts(conn))
    counts = _brought_up_to_date(conn, kept, texts, marks) if kept is not None else None
    if counts is None:
        counts = _count(list(texts.values()), processes)
    if keep and (kept is None or kept.members != marks or kept.counts != counts):
        papers.keep_counts(conn, Kept(analyzer_mark(), marks, counts).as_json())
    return counts


def _brought_up_to_date(
    conn: Connection, kept: Kept, texts: dict[int, tuple[str, str]], marks: dict[int, str]
) -> TermCounts | None:
    """The kept counts less the papers that left the sample, plus those that came in; None
    when that cannot give the sample's counts (a paper of both changed or is gone) or
    would cost about as much as counting afresh."""
    came = [ident for ident in marks if ident not in kept.members]
    left = [ident for ident in kept.members if ident not in marks]
    if any(kept.members[ident] != mark for ident, mark in marks.items() if ident in kept.members):
        return None  # a sampled paper's text changed: its old terms are not known
    if len(came) + len(left) > UPDATE_AT_MOST * max(len(marks), 1):
        return None
    gone = papers.stats_texts(conn, left)
    if len(gone) < len(left) or any(fingerprint(*gone[i]) != kept.members[i] for i in left):
        return None  # a paper that left is gone from the store, or changed since
    counts = kept.counts
    if left:
        counts = counts - TermCounts.of(gone[ident] for ident in left)
    if came:
        counts = counts + TermCounts.of(texts[ident] for ident in came)
    return counts


def _count(texts: Sequence[tuple[str, str]], processes: int | None) -> TermCounts:
    if processes is None:
        processes = forks.processes_for(len(texts), threshold=PARALLEL_FROM, cap=MAX_PROCESSES)
    if processes <= 1:
        return TermCounts.of(texts)
    return reduce(add, forks.fork_map(_counts, texts, processes))


def _counts(texts: Sequence[tuple[str, str]]) -> TermCounts:
    return TermCounts.of(texts)


def fingerprint(title: str, abstract: str) -> str:
    """A paper's text, as far as the counts go, in 16 hex digits."""
    digest = hashlib.blake2b(title.encode(), digest_size=8)
    digest.update(b"\0")
    digest.update(abstract.encode())
    return digest.hexdigest()


_PROBE = (
    "Self-Supervised Mixture-of-Experts (MoE) for Large Language Models",
    "We study naïve state-of-the-art end-to-end speech-to-text (ASR) analyses of losses"
    " and buses with graph neural networks (GNNs); results in ｆｕｌｌ width, 3D and x--y.",
)
_ANALYZER: list[str] = []


def analyzer_mark() -> str:
    """What the analyzer makes of a probe text, in 16 hex digits: counts kept by an analyzer
    that counts differently are not used."""
    if not _ANALYZER:
        probe = TermCounts.of([_PROBE], DEFAULT).as_json()
        text = json.dumps(probe, sort_keys=True).encode()
        _ANALYZER.append(hashlib.blake2b(text, digest_size=8).hexdigest())
    return _ANALYZER[0]
