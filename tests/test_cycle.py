"""The whole cycle and its outbox: once per period, once per paper, and crash-safe."""

from __future__ import annotations

import email
import email.policy
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport, TransportError
from digest.errors import DeliveryError
from digest.ingest.dumps import Clock
from digest.service.cycle import run_cycle
from digest.service.subscriptions import (
    find_subscriber,
    operator_patch,
    set_status,
    upsert_subscriber,
)
from digest.settings import Settings, load_settings
from digest.store.engine import open_store

DAY = date(2026, 3, 12)
JOINED = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)

PEOPLE = {
    "ada@example.org": ['"federated learning"', 'llm OR "language model"'],
    "bob@example.org": ["diffusion -survey"],
    "cy@example.org": ["speech", "translation ^2"],
    "dee@example.org": ["self-supervised"],
    "nobody@example.org": ['"quantum chromodynamics lattice"'],
}


class Crash(Exception):
    """The process dying part way (not a delivery failure)."""


class CrashAfter(RecordingTransport):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        if len(self.sent) >= self.n:
            raise Crash("killed")
        await super().send(sender_addr, recipient, message, message_id)


def ticking(start: datetime) -> Clock:
    moments = iter(start + timedelta(seconds=i) for i in range(1_000_000))
    return Clock(lambda: next(moments))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_SMTP_CONNECTIONS": "1",
        "DIGEST_DATABASE_URL": database_url,
    }
    return load_settings(environ=env, cwd=tmp_path)


@pytest.fixture
def store(settings: Settings, dump_b: Path) -> Iterator[Engine]:
    engine = open_store(settings.database_url)
    for address, interests in PEOPLE.items():
        upsert_subscriber(engine, operator_patch(address, interests), now=JOINED)
    settings.inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(dump_b, settings.inbox / "daily.txt")
    yield engine
    engine.dispose()


def digests(engine: Engine) -> list[tuple[str, str, str, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT s.email, d.status, d.message_id, d.attempts FROM digest d"
                    " JOIN subscriber s ON s.id = d.subscriber_id ORDER BY s.email, d.period"
                )
            ).all()
        ]


def test_run_sends_each_digest_once_per_period(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    transport = RecordingTransport()
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=transport)
    recipients = sorted(m.recipient for m in transport.sent)
    assert recipients == ["ada@example.org", "bob@example.org", "cy@example.org", "dee@example.org"]
    figures = report.as_json()["digests"]
    assert (figures["sent"], figures["skipped"], figures["failed"]) == (4, 1, 0)
    assert report.dumps[0].status == "ok"

    again = RecordingTransport()
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=again)
    assert again.sent == []
    assert report.as_json()["digests"]["sent"] == 0

    # the next day the same papers are seen again (a trending dump): nobody gets one twice
    shutil.copy(dump_a, settings.inbox / "trending.txt")
    next_day = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY + timedelta(1), transport=next_day)
    first = {m.recipient: m.message for m in transport.sent}
    assert next_day.sent
    for message in next_day.sent:
        old = email.message_from_bytes(
            first.get(message.recipient, b""), policy=email.policy.default
        )
        new = email.message_from_bytes(message.message, policy=email.policy.default)
        old_titles = set(_titles(old))
        assert _titles(new), message.recipient  # so the check below compares real titles
        assert not old_titles & set(_titles(new)), message.recipient


def _titles(message: email.message.Message) -> list[str]:
    if not message.is_multipart():
        return []
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    text = body.get_content() if body is not None else ""
    return [line[2:].strip() for line in text.splitlines() if line.startswith("* ")]


def test_crash_part_way_then_rerun_sends_exactly_the_rest(
    settings: Settings, store: Engine
) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    first = CrashAfter(2)
    with pytest.raises(Crash):
        run_cycle(settings, store, clock=clock, period=DAY, transport=first)
    assert len(first.sent) == 2
    second = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY, transport=second)
    delivered = [m.recipient for m in first.sent] + [m.recipient for m in second.sent]
    assert sorted(delivered) == [
        "ada@example.org",
        "bob@example.org",
        "cy@example.org",
        "dee@example.org",
    ]
    statuses = {row[0]: row[1] for row in digests(store)}
    assert statuses["nobody@example.org"] == "skipped"
    assert {s for a, s in statuses.items() if a != "nobody@example.org"} == {"sent"}


def test_message_id_is_stable_across_attempts(settings: Settings, store: Engine) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    failing = RecordingTransport(errors={"ada@example.org": DeliveryError("451 try later")})
    run_cycle(settings, store, clock=clock, period=DAY, transport=failing)
    (ada,) = [row for row in digests(store) if row[0] == "ada@example.org"]
    assert ada[1] == "pending" and ada[3] == 1
    retry = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY, transport=retry)
    (sent,) = retry.sent
    assert sent.recipient == "ada@example.org"
    assert sent.message_id == ada[2]
    parsed = email.message_from_bytes(sent.message, policy=email.policy.default)
    assert parsed["Message-ID"] == ada[2]


def test_permanent_failure_bounces_the_address(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    bouncing = RecordingTransport(
        errors={"bob@example.org": DeliveryError("550 no such user", permanent=True)}
    )
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=bouncing)
    assert report.delivered.bounced == ["bob@example.org"]
    assert find_subscriber(store, "bob@example.org").status == "bounced"
    shutil.copy(dump_a, settings.inbox / "trending.txt")
    later = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY + timedelta(1), transport=later)
    assert "bob@example.org" not in {m.recipient for m in later.sent}


def test_dry_run_records_and_sends_nothing(settings: Settings, store: Engine) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    from digest.ingest.dumps import ingest_inbox

    ingest_inbox(store, settings.inbox, clock=clock)
    transport = RecordingTransport()
    report = run_cycle(settings, store, clock=clock, period=DAY, dry_run=True, transport=transport)
    assert transport.sent == []
    assert digests(store) == []
    assert len(report.previews) == 4
    assert all(p["bytes"] > 1000 for p in report.previews)


def test_nothing_new_is_skipped_unless_asked(settings: Settings, store: Engine) -> None:
    upsert_subscriber(
        store,
        operator_patch("nobody@example.org", PEOPLE["nobody@example.org"], send_empty=True),
        now=JOINED,
    )
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    transport = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY, transport=transport)
    assert "nobody@example.org" in {m.recipient for m in transport.sent}


def test_feeds_are_written_and_stable(settings: Settings, store: Engine) -> None:
    feedparser = pytest.importorskip("feedparser")
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=RecordingTransport())
    assert report.feeds["written"] >= 1
    atom = settings.feeds_dir / "papers.atom"
    parsed = feedparser.parse(atom.read_bytes())
    assert parsed.bozo == 0
    guids = [entry.id for entry in parsed.entries]
    assert len(guids) == len(set(guids)) > 0
    private = list((settings.feeds_dir / "private").glob("*.atom"))
    # a PostgreSQL store (hosts may share it) has its private feeds served live, not as files
    assert len(private) == (0 if settings.shared_store else len(PEOPLE))
    before = {p: p.stat().st_mtime_ns for p in settings.feeds_dir.rglob("*") if p.is_file()}
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=RecordingTransport())
    assert report.feeds["written"] == 0
    after = {p: p.stat().st_mtime_ns for p in settings.feeds_dir.rglob("*") if p.is_file()}
    assert before == after


def test_an_unreachable_mail_server_ends_the_pass_at_once_and_costs_nothing(
    settings: Settings, store: Engine
) -> None:
    for n in range(6):
        upsert_subscriber(store, operator_patch(f"extra{n}@example.org", ["model"]), now=JOINED)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    reason = "mail server 127.0.0.1:2599 refused the connection"
    down = RecordingTransport(fail_after=0, error=TransportError(reason))
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=down)
    assert report.delivered.gave_up == report.delivered.transport_error == reason
    assert report.delivered.deferred == 1  # the one in hand; nothing more was tried
    assert report.pending_reason == reason
    attempts = [row[3] for row in digests(store) if row[1] == "pending"]
    assert len(attempts) == 10 and set(attempts) == {0}
    back = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY, transport=back)
    assert len(back.sent) == len(attempts)


def test_temporary_answers_in_a_row_end_the_pass_early(settings: Settings, store: Engine) -> None:
    for n in range(6):
        upsert_subscriber(store, operator_patch(f"extra{n}@example.org", ["model"]), now=JOINED)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    busy = RecordingTransport(fail_after=0, error=DeliveryError("451 try later"))
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=busy)
    assert report.delivered.gave_up is not None
    assert report.delivered.deferred == 3  # not one try per digest in the outbox
    attempts = [row[3] for row in digests(store) if row[1] == "pending"]
    assert len(attempts) == 10 and set(attempts) == {0}  # an answer everyone gets: an outage


def test_private_feeds_keep_the_newest_items_of_each_reader(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    feedparser = pytest.importorskip("feedparser")

    small = settings.model_copy(update={"feed_items": 3})
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    sent = RecordingTransport()
    run_cycle(small, store, clock=clock, period=DAY, transport=sent)
    shutil.copy(dump_a, small.inbox / "trending.txt")
    later = RecordingTransport()
    run_cycle(small, store, clock=clock, period=DAY + timedelta(1), transport=later)
    feeds = [path.read_bytes() for path in (small.feeds_dir / "private").glob("*.atom")]
    if small.shared_store:  # no private feed files there: the feeds as the web front serves them
        assert feeds == []
        feeds = live_private_feeds(small, store)
    sizes = [len(feedparser.parse(feed).entries) for feed in feeds]
    assert max(sizes) == 3  # capped at feed_items, newest first
    assert len(feeds) == len(PEOPLE)


def live_private_feeds(settings: Settings, store: Engine) -> list[bytes]:
    """Every reader's private feed, built from the store as ``/feeds/private/`` serves it."""
    from digest.service.keys import site_keys
    from digest.service.live_feeds import PrivateFeed, feed_site, private_feed
    from digest.tokens import feed_name

    key = site_keys(settings, store, datetime.now(UTC)).signing
    site = feed_site(store, settings)
    with store.connect() as conn:
        readers = conn.execute(sa.text("SELECT id, token_salt FROM subscriber")).all()
    return [
        private_feed(
            store, site, key, PrivateFeed(ident, salt, ()), feed_name(key, ident, salt), "atom"
        ).body
        for ident, salt in readers
    ]


def test_plans_equal_ranking_every_reader_with_their_own_candidates(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    """The shared fast path (readers with the usual cutoff) picks what the slow path picks."""
    from digest.deliver.plan import plan_owed
    from digest.ingest.dumps import ingest_inbox
    from digest.rank.corpus import store_stats
    from digest.rank.ranker import rank
    from digest.rank.types import PlainPaper, Profile
    from digest.store.subscribers import interests_of, list_subscribers

    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    ingest_inbox(store, settings.inbox, clock=clock)  # dump B, after everyone joined
    upsert_subscriber(store, operator_patch("late@example.org", ["learning"]), now=clock())
    shutil.copy(dump_a, settings.inbox / "trending.txt")
    ingest_inbox(store, settings.inbox, clock=clock)  # dump A, after the late reader joined
    with store.connect() as conn:
        plans = plan_owed(conn, period=DAY)
        rows = conn.execute(
            sa.text("SELECT id, title, abstract, times_seen, first_seen FROM paper")
        ).all()
        stats = store_stats(conn)
        conn.rollback()
    readers = list_subscribers(store)
    # The oracle goes by time: the ingests here follow the clock, so time and sequence agree.
    cutoff = {s.id: s.created_at for s in readers}
    reference = rank(
        [PlainPaper(r[0], r[1], r[2], r[3]) for r in rows],
        [Profile(int(s.id or 0), tuple(interests_of(s))) for s in readers],
        stats,
        candidates={
            int(s.id or 0): {
                r[0]
                for r in rows
                if datetime.fromisoformat(str(r[4])).replace(tzinfo=UTC) > cutoff[s.id]
            }
            for s in readers
        },
    )
    got = {
        plan.subscriber.id: [(r.paper_id, round(r.score, 9)) for r in plan.ranked] for plan in plans
    }
    want = {
        sid: [(r.paper_id, round(r.score, 9)) for r in ranked] for sid, ranked in reference.items()
    }
    assert got == want
    late = next(p for p in plans if p.subscriber.email == "late@example.org")
    newest = max(datetime.fromisoformat(str(r[4])) for r in rows)
    from_a = {r[0] for r in rows if datetime.fromisoformat(str(r[4])) == newest}
    assert late.ranked and {r.paper_id for r in late.ranked} <= from_a


def test_the_outbox_goes_out_in_batches_each_digest_once(
    settings: Settings, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.service.cycle

    monkeypatch.setattr(digest.service.cycle, "OUTBOX_BATCH", 2)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    transport = RecordingTransport()
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=transport)
    recipients = [m.recipient for m in transport.sent]
    assert sorted(recipients) == sorted(set(recipients)) and len(recipients) == 4
    assert report.delivered.sent == 4 and not transport.closed  # a given transport stays open


def test_feeds_written_by_two_processes_are_the_same_files(
    settings: Settings, store: Engine, tmp_path: Path
) -> None:

    from digest.service.cycle import publish_site_feeds

    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    run_cycle(settings, store, clock=clock, period=DAY, transport=RecordingTransport())
    now = clock()
    outputs = []
    private = len(PEOPLE) if settings.private_feed_files else 0  # none on PostgreSQL
    for processes in (1, 2):
        target = settings.model_copy(update={"feeds_dir": tmp_path / f"feeds-{processes}"})
        counts = publish_site_feeds(target, store, now=now, processes=processes)
        assert counts == {"written": 2 * (private + 1), "unchanged": 0, "removed": 0}
        files = sorted(p for p in target.feeds_dir.rglob("*") if p.is_file())
        outputs.append({p.relative_to(target.feeds_dir): p.read_bytes() for p in files})
    assert outputs[0] == outputs[1]


def test_a_digest_waiting_for_someone_who_left_is_never_sent(
    settings: Settings, store: Engine
) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    down = RecordingTransport(fail_after=0, error=TransportError("mail server down"))
    run_cycle(settings, store, clock=clock, period=DAY, transport=down)
    waiting = {row[0] for row in digests(store) if row[1] == "pending"}
    assert "ada@example.org" in waiting and len(waiting) > 1
    set_status(store, "ada@example.org", "unsubscribed")
    back = RecordingTransport()
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=back)
    assert sorted(sent.recipient for sent in back.sent) == sorted(waiting - {"ada@example.org"})
    assert report.figures()["digests"]["withdrawn"] == 1
    assert {row[0]: row[1] for row in digests(store)}["ada@example.org"] == "skipped"
    with store.connect() as conn:
        why = conn.execute(
            sa.text(
                "SELECT d.last_error FROM digest d JOIN subscriber s ON s.id = d.subscriber_id"
                " WHERE s.email = 'ada@example.org'"
            )
        ).scalar()
    assert why == "not sent: the subscriber was unsubscribed before it went out"
    assert report.pending_reason is None


def test_a_reader_back_after_leaving_starts_from_the_next_listing(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    from digest.ingest.dumps import ingest_inbox

    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    set_status(store, "ada@example.org", "unsubscribed")
    ingest_inbox(store, settings.inbox, clock=clock)  # dump B, while she is away
    spec = operator_patch("ada@example.org", PEOPLE["ada@example.org"])
    upsert_subscriber(store, spec, now=clock(), resubscribe=True)
    back = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY, transport=back)
    recipients = {sent.recipient for sent in back.sent}
    assert "cy@example.org" in recipients  # the others get dump B's papers
    assert "ada@example.org" not in recipients  # what came while she was away is not owed
    shutil.copy(dump_a, settings.inbox / "trending.txt")
    later = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY + timedelta(days=1), transport=later)
    assert "ada@example.org" in {sent.recipient for sent in later.sent}


def items_by_reader(engine: Engine, status: str) -> dict[str, set[int]]:
    """The papers in each reader's digests of ``status``."""
    found: dict[str, set[int]] = {}
    with engine.connect() as conn:
        for address, paper in conn.execute(
            sa.text(
                "SELECT s.email, i.paper_id FROM digestitem i JOIN digest d ON d.id = i.digest_id"
                " JOIN subscriber s ON s.id = d.subscriber_id WHERE d.status = :status"
            ),
            {"status": status},
        ):
            found.setdefault(address, set()).add(paper)
    return found


def test_periods_missed_in_an_outage_come_as_one_digest_with_every_paper(
    settings: Settings, store: Engine, dump_a: Path
) -> None:
    for n in range(3):  # enough readers for the outage to show
        upsert_subscriber(store, operator_patch(f"extra{n}@example.org", ["model"]), now=JOINED)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    busy = RecordingTransport(fail_after=0, error=DeliveryError("451 try later"))
    first = run_cycle(settings, store, clock=clock, period=DAY, transport=busy)
    assert first.delivered.gave_up is not None
    owed = items_by_reader(store, "pending")
    shutil.copy(dump_a, settings.inbox / "trending.txt")
    run_cycle(settings, store, clock=clock, period=DAY + timedelta(1), transport=busy)
    later = items_by_reader(store, "pending")
    assert all(owed[reader] < later[reader] for reader in owed)  # taken in, with the new ones

    back = RecordingTransport()
    run_cycle(settings, store, clock=clock, period=DAY + timedelta(2), transport=back)

    recipients = [m.recipient for m in back.sent]
    assert sorted(recipients) == sorted(later)  # one digest each
    assert items_by_reader(store, "sent") == later
    assert items_by_reader(store, "skipped") == {}  # the digests taken in hold nothing
    attempts = [row[3] for row in digests(store) if row[1] == "sent"]
    assert set(attempts) == {1}
