"""Deliver the outbox: send every pending digest once, from any number of senders.

A sender claims a batch of digests (``store.claims``: an owner and a lease, so
senders on other hosts take other digests), hands each to the transport, and
marks it ``sent`` soon after, only while its claim holds. The marks are written
in groups of up to ``MARK_GROUP``, one transaction each (a group commit), none
waiting more than ``MARK_WAIT``, and a batch ends only once all of its marks are
written; a connection waits for room while ``MARKS_UNWRITTEN`` messages are sent
and not marked, so a sender killed at any moment leaves at most that many.
Another sender takes its digests when the lease runs out and sends those again
under the same Message-ID, the one duplicate a receiver may see and can drop.
Every outcome the sender writes, a failure as much as a sent mark, is written
only while its claim holds: a sender that lost a digest to another writes
nothing over the other's outcome, and counts it (``claims_lost``).

What a failure costs depends on whose it is. A 5xx bounces the address. A fault
nobody is to blame for costs nothing: the transport failing (server down, login
refused, disk full) ends the pass at once with everything still pending, and a
dropped connection leaves the digest pending. An address the transport cannot
carry sets that one digest aside (``failed``, with the reason) and the pass goes on.

A 4xx is the recipient's only when the server takes other messages in the same pass: it
then costs the digest one of its ``MAX_ATTEMPTS``. A 4xx every message gets is an outage
like a server that is down: ``GIVE_UP_AFTER`` of them in a row with none taken ends the
pass, and none of them costs anything. Digests tried before go after the fresh ones, so a
few full mailboxes at the head of the outbox never pass for an outage (nor hold up
everyone behind them). A digest fails for good only when it is out of attempts and the
first was made ``FAIL_AFTER`` ago, so one bad afternoon never loses a reader's papers; and
then its papers go back to the reader's next digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.deliver.message import MessageBuilder
from digest.deliver.transports import AddressError, Transport, TransportError
from digest.errors import DeliveryError, DigestError, StoreError
from digest.present.paper import DigestView, PaperView, prepare
from digest.present.views import Links, paper_view, stored_view
from digest.store import claims, outbox, unsent
from digest.store.engine import reading

log = logging.getLogger("digest.deliver")

MAX_ATTEMPTS = 5
IN_HAND = 2  # messages a sending pass holds at once for each of its connections
SPARE_EVERY = 64  # messages built between two calls of a pass's ``sparing_the_collector``
FAIL_AFTER = timedelta(days=3)  # the least time between a digest's first attempt and failing
# Temporary failures in a row, none taken between, that make an outage: the mail server is
# refusing everyone, and every further digest would only wait for it too.
GIVE_UP_AFTER = 3
# Sent marks: written this many at most in one transaction, once the first has waited this
# many seconds at most; at most this many handed over and not written at once (what a
# sender killed at the worst moment can leave to go out again).
MARK_GROUP = 16
MARK_WAIT = 0.025
MARKS_UNWRITTEN = 2 * MARK_GROUP


@dataclass
class Outgoing:
    """A digest ready to render and send."""

    digest_id: int
    subscriber_id: int
    email: str
    view: DigestView
    retried: bool = False  # tried before in an earlier pass


@dataclass
class Delivered:
    """What a delivery pass did."""

    sent: int = 0
    failed: int = 0  # bounced and set aside included
    deferred: int = 0
    withdrawn: int = 0  # waiting for someone who left since: never sent
    bounced: list[str] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    sent_to: set[int] = field(default_factory=set)  # subscriber ids: their private feeds changed
    stopped: bool = False
    gave_up: str | None = None  # why the pass stopped early (the mail server is unreachable)
    transport_error: str | None = None  # the transport's own failure, when that was the reason
    last_error: str | None = None  # the last failure that left a digest pending
    # outcomes (sent or failed) not written: the lease ran out and another sender took it
    claims_lost: int = 0

    def add(self, other: Delivered) -> None:
        """Fold the outcome of a later batch into this one."""
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.withdrawn += other.withdrawn
        self.bounced.extend(other.bounced)
        self.set_aside.extend(other.set_aside)
        self.sent_to |= other.sent_to
        self.stopped = self.stopped or other.stopped
        self.gave_up = self.gave_up or other.gave_up
        self.transport_error = self.transport_error or other.transport_error
        self.last_error = other.last_error or self.last_error
        self.claims_lost += other.claims_lost


def paper_views(
    conn: Connection,
    digest_ids: Sequence[int],
    base_url: str | None = None,
    papers: outbox.PapersRead | None = None,
) -> dict[int, list[PaperView]]:
    """The papers of each digest, in rank order, as the email shows them (linking to their
    pages at ``base_url``); ``papers``: those read for a pass's batches before."""
    return item_views(outbox.items_of(conn, digest_ids, papers), base_url)


def item_views(
    items: Mapping[int, Sequence[outbox.ItemRow]], base_url: str | None = None
) -> dict[int, list[PaperView]]:
    """Each digest's items as views: an item alike in paper, score and explanation is one
    view, shared by every digest that carries it (``stored_view``)."""
    # A batch's rows share one object per paper (``items_of``; a pass's batches, with
    # ``PapersRead``): an item met again is found by that object, without hashing the
    # row's fields for the shared cache.
    met: dict[tuple[int, float, str], PaperView] = {}
    views: dict[int, list[PaperView]] = {}
    for digest_id, rows in items.items():
        views[digest_id] = papers = []
        for item in rows:
            key = (id(item.paper), item.score, item.matched)
            view = met.get(key)
            if view is None:
                view = met[key] = stored_view(item.paper, item.score, item.matched, base_url)
            papers.append(view)
    return views


def prepare_papers(engine: Engine, builder: MessageBuilder, base_url: str | None) -> int:
    """What ``builder`` shows of each paper of the digests waiting to every reader worked out
    ahead (``MessageBuilder.prepare``): for a run's process before its senders fork, so that
    each sender does not work out again the papers it meets first (about 40% of a day's, after
    the first batch). Returns how many papers were worked out."""
    with reading(engine) as conn:
        rows = outbox.waiting_papers(conn)
        conn.rollback()
    return builder.prepare(paper_view(row, 0.0, (), base_url) for row in rows)


def outgoing_of(
    engine: Engine,
    links: Links,
    rows: Sequence[outbox.OutboxRow],
    read: outbox.PapersRead | None = None,
) -> list[Outgoing]:
    """The claimed digests ``rows`` as the emails show them; ``read``: the papers read for
    the pass's batches before (``outbox.PapersRead``)."""
    with reading(engine) as conn:
        papers = paper_views(conn, [r.digest_id for r in rows], links.base_url, read)
        conn.rollback()
    outgoing = []
    for row in rows:
        view = links.digest_view(
            to=row.email,
            ident=row.subscriber_id,
            salt=row.token_salt,
            period=row.period,
            papers=papers[row.digest_id],
            message_id=row.message_id,
        )
        outgoing.append(Outgoing(row.digest_id, row.subscriber_id, row.email, view, row.retried))
    return outgoing


@dataclass(frozen=True)
class Claim:
    """Who sends (a name unique to this sender) and how long its claims hold unrenewed."""

    sender: str
    lease: timedelta


class Marks:
    """Sent marks written in groups (a group commit): a message the server took is handed
    over (``hand``) and its connection takes the next one at once; the marks are written
    together when ``MARK_GROUP`` are waiting, when the first has waited ``MARK_WAIT``, or
    when the batch ends (``flush``). A connection takes a place (``room``) before it sends,
    held until the message's mark is written (or given back, ``give_back``, when it was
    not sent): at most ``MARKS_UNWRITTEN`` messages are on their way or sent and not marked.

    Written as the connections finished, a group held 1.1 marks and cost 0.29 ms of CPU
    with a second sender writing the same SQLite file (each commit makes the other's cache
    stale); in groups of 16 a mark costs 0.06 ms (bench/README.md, "Marks in groups")."""

    def __init__(
        self,
        engine: Engine,
        claim: Claim,
        clock: Callable[[], datetime],
        *,
        group: int | None = None,
        wait: float | None = None,
    ) -> None:
        self.engine = engine
        self.claim = claim
        self.clock = clock
        self.group = group or MARK_GROUP
        self.wait = MARK_WAIT if wait is None else wait
        self.waiting: list[tuple[int, asyncio.Future[bool]]] = []
        self.unwritten = 0  # places taken: messages on their way, or sent and not marked
        self.limit = MARKS_UNWRITTEN if group is None else 2 * group
        self.writer: asyncio.Task[None] | None = None
        self.failed: DigestError | None = None  # a group could not be written
        self._flushing = False
        self._full = asyncio.Event()  # a group is full, or everything is to go now
        self._written = asyncio.Event()  # a group was written: there may be room

    def hand(self, digest_id: int) -> asyncio.Future[bool]:
        """The digest was sent: its mark goes into the next group. The future's result says
        whether it was marked (False: the claim was lost to another sender)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append((digest_id, done))
        if len(self.waiting) >= self.group:
            self._full.set()
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())
        return done

    async def room(self) -> None:
        """Take a place for a message about to be sent, once one is free."""
        while self.unwritten >= self.limit:
            self._full.set()
            self._written.clear()
            await self._written.wait()
        self.unwritten += 1

    def give_back(self) -> None:
        """The place taken for a message that was not sent."""
        self.unwritten -= 1
        self._written.set()

    async def flush(self) -> None:
        """Write every mark handed over, and wait for them."""
        self._flushing = True
        try:
            while self.writer is not None:
                self._full.set()
                await asyncio.shield(self.writer)
        finally:
            self._flushing = False

    async def _write(self) -> None:
        try:
            while self.waiting:
                if not (self._full.is_set() or self._flushing):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.wait)
                self._full.clear()
                group, self.waiting = self.waiting[: self.group], self.waiting[self.group :]
                if len(self.waiting) >= self.group:
                    self._full.set()
                try:
                    marked = self._mark([digest_id for digest_id, _ in group])
                except DigestError as exc:
                    self.failed = exc
                    for _, done in group:
                        done.set_exception(exc)
                else:
                    for digest_id, done in group:
                        done.set_result(digest_id in marked)
                self.unwritten -= len(group)
                self._written.set()
        finally:
            self.writer = None
            self._written.set()

    def _mark(self, ids: list[int]) -> set[int]:
        try:
            return self._mark_once(ids)
        except StoreError as exc:
            # The connection was lost (a restarted server, a proxy dropping it): the pool
            # opens another, and the mark is written again (it is idempotent).
            log.warning("writing sent marks again", extra={"error": str(exc)})
            return self._mark_once(ids)

    def _mark_once(self, ids: list[int]) -> set[int]:
        # The leases are the heartbeat's to renew: renewing them with every group rewrote
        # every digest the sender holds (a batch) for every few sent.
        return claims.mark_sent(
            self.engine,
            self.claim.sender,
            ids,
            at=self.clock(),
            lease=self.claim.lease,
            renew=False,
        )


class Heartbeat:
    """Renews the sender's leases every third of a lease while a pass runs, so a long batch
    (a slow mail server, one that holds each message for seconds) keeps its claims: the
    marks do not renew them.

    It is a task on the pass's own event loop, not a thread: it renews only while the loop
    turns, so a pass stuck for good stops renewing and its digests go to the other senders
    after one lease, as a dead sender's do. A renewal that fails (the database away) is
    logged and tried again at the next beat.
    """

    def __init__(self, engine: Engine, claim: Claim, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.claim = claim
        self.clock = clock
        self.every = claim.lease.total_seconds() / 3
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Beat from now on (on the running loop)."""
        if self.task is None and self.every > 0:
            self.task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Beat no more."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                claims.heartbeat(
                    self.engine, self.claim.sender, at=self.clock(), lease=self.claim.lease
                )
            except DigestError as exc:
                log.warning("leases not renewed", extra={"error": str(exc)})


class Judge:
    """Whose fault a pass's temporary failures are, decided as the pass goes.

    A temporary failure is held, at no cost, until the pass shows whose it is: a message
    taken afterwards (or before, for a digest tried before) makes it the recipient's, and
    it is charged; ``GIVE_UP_AFTER`` held in a row with none taken make an outage, and
    none of them is charged. Held failures still open when the pass ends are charged only
    if the server took something in the pass.
    """

    def __init__(
        self, engine: Engine, result: Delivered, clock: Callable[[], datetime], sender: str
    ) -> None:
        self.engine = engine
        self.result = result
        self.clock = clock
        self.sender = sender  # whose claims its outcomes are written under
        self.taken = False  # the server took a message in this pass
        self.held: list[tuple[Outgoing, DeliveryError]] = []
        self.outage: str | None = None

    def accepted(self) -> None:
        """A message was taken: the failures held so far were their recipients' own."""
        self.taken = True
        if not self.outage:
            self._charge()

    def temporary(self, item: Outgoing, exc: DeliveryError) -> None:
        """A temporary answer about this recipient: charge it, hold it, or call an outage."""
        reason = str(exc)
        self.result.last_error = reason[:500]
        if self.taken and item.retried and not self.held and not self.outage:
            # the server takes other mail, and this digest failed before: its own trouble
            _failed(self.engine, self.sender, item, exc, self.result, self.clock())
            return
        if not outbox.mark_unsent(self.engine, item.digest_id, reason, sender=self.sender):
            _lost(item, self.result)
            return
        self.held.append((item, exc))
        if not self.outage and len(self.held) >= GIVE_UP_AFTER:
            taken = "none taken since the last" if self.taken else "none taken"
            self.outage = (
                f"the mail server answered {len(self.held)} messages in a row with a temporary"
                f" failure, {taken} ({reason})"
            )

    def finish(self) -> None:
        """The pass is over: held failures are charged if the server took anything."""
        if self.taken and not self.outage:
            self._charge()
        self.result.deferred += len(self.held)
        self.held = []

    def _charge(self) -> None:
        held, self.held = self.held, []
        for item, exc in held:
            _failed(self.engine, self.sender, item, exc, self.result, self.clock())


async def deliver(
    engine: Engine,
    outgoing: Sequence[Outgoing],
    builder: MessageBuilder,
    transport: Any,
    *,
    sender_addr: str,
    clock: Callable[[], datetime],
    concurrency: int = 4,
    marks: Marks,
    stop: threading.Event | None = None,
    judge: Judge | None = None,
    spare: Callable[[], None] | None = None,
) -> Delivered:
    """Send each claimed digest once, over ``concurrency`` connections (``IN_HAND`` messages
    in hand for each); stops taking new ones when ``stop`` is set. ``judge``: the pass
    this batch is part of (alone: a pass of its own).
    ``spare``: called every ``SPARE_EVERY`` messages built (``sparing_the_collector``)."""
    result = Delivered() if judge is None else judge.result
    sender = marks.claim.sender
    judging = judge or Judge(engine, result, clock, sender)
    builder.next_batch()  # the views of earlier batches are not met again
    prepare(paper for item in outgoing for paper in item.view.papers)
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()
    for item in outgoing:
        queue.put_nowait(item)

    def give_up(reason: str) -> None:
        if not result.gave_up:
            result.gave_up = reason
            log.warning("delivery stopped", extra={"reason": reason})

    broken: list[BaseException] = []
    built = 0
    handed: list[tuple[Outgoing, asyncio.Future[bool]]] = []  # sent, each with its mark

    async def worker() -> None:
        try:
            await work()
        except Exception as exc:
            # The others finish the message in hand (and its mark) and take no more: a
            # message handed over is never left unmarked behind an error of another's.
            broken.append(exc)

    async def work() -> None:
        nonlocal built
        while not queue.empty():
            if stop is not None and stop.is_set():
                result.stopped = True
                return
            if result.gave_up or broken or marks.failed:
                return
            item = queue.get_nowait()
            built += 1
            if spare is not None and built % SPARE_EVERY == 0:
                spare()
            try:
                raw = builder.build(item.view, clock())
            except (ValueError, UnicodeError) as exc:  # an address no message can carry
                _set_aside(engine, sender, item, str(exc), result)
                continue
            await marks.room()  # given back unless the message is sent
            if marks.failed or broken:  # while it waited: this one is left claimed, unsent
                marks.give_back()
                return
            try:
                try:
                    await transport.send(sender_addr, item.email, raw, item.view.message_id)
                except BaseException:
                    marks.give_back()  # a place stays taken only by a message the server took
                    raise
            except TransportError as exc:
                reason = str(exc)
                if outbox.mark_unsent(engine, item.digest_id, reason, sender=sender):
                    result.deferred += 1
                else:
                    _lost(item, result)
                result.transport_error = result.transport_error or reason
                result.last_error = reason
                give_up(reason)
                continue
            except AddressError as exc:
                _set_aside(engine, sender, item, str(exc), result)
                continue
            except DeliveryError as exc:
                if exc.permanent or not exc.counts:
                    _failed(engine, sender, item, exc, result, clock())
                else:
                    judging.temporary(item, exc)
                    if judging.outage:
                        give_up(judging.outage)
                continue
            judging.accepted()
            handed.append((item, marks.hand(item.digest_id)))

    # Two messages in hand a connection: one is built while the other waits for the
    # server's answer (the transport holds it to its connections). With one, a sender
    # building for a server on the same cores sat waiting for answers a quarter of the time.
    workers = [asyncio.create_task(worker()) for _ in range(IN_HAND * max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        await marks.flush()  # every message the server took is marked before the batch ends
    for item, done in handed:
        failed = done.exception()
        if failed is not None:
            broken.append(failed)
        elif done.result():
            result.sent += 1
            result.sent_to.add(item.subscriber_id)
        else:
            _lost(item, result)  # another sender took it: that one marks it
    if broken:
        raise broken[0]
    if judge is None:
        judging.finish()
    return result


@contextlib.contextmanager
def sparing_the_collector() -> Iterator[Callable[[], None]]:
    """For a delivery pass: a call that sets what the process holds so far apart from the
    garbage collector's passes (``gc.freeze``), made as each batch starts and every
    ``SPARE_EVERY`` messages built; the pass's end gives it all back (``gc.unfreeze``).

    A pass keeps what it works out for the readers to come (views, marks, blocks: millions
    of small objects at 20,000 readers), and the collector's full passes went over all of
    it again each time it had grown by a quarter: 14% of the CPU a message. Set apart once
    a batch, a batch's own still grew enough for about one full pass every 1,700 messages,
    each over all of it (1.2 of 1.9 s of collecting at 20,000 messages); set apart every
    64 messages, no full pass comes at all (0.7 s). None of it is cyclic garbage (tuples,
    strings, bytes and frozen views, let go by reference count), so nothing is left
    uncollected by setting it apart; the young collections still take most cyclic garbage
    as it comes (a few hundred objects a batch were left to set apart, in a 20,000-message
    pass), and the rest is collected at the pass's end."""
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


async def send_outbox(
    engine: Engine,
    transport: Transport | None,
    builder: MessageBuilder,
    links: Links,
    *,
    open_transport: Callable[[], Transport],
    sender_addr: str,
    concurrency: int,
    clock: Callable[[], datetime],
    stop: threading.Event | None,
    batch: int,
    claim: Claim,
    batches: int | None = None,
) -> Delivered:
    """Send the outbox, claiming ``batch`` digests at a time (memory stays flat; other
    senders take others), over one transport (its connections are reused throughout):
    ``transport``, or one opened (and closed) here only when something is to be sent.
    Digests claimed and not sent are given back when the pass ends; while it runs, the
    sender's leases are renewed (``Heartbeat``). ``batches``: at most that many, then the
    pass ends (the rest is left to the next pass or another sender)."""
    total = Delivered(withdrawn=outbox.withdraw_unwanted(engine))
    judge = Judge(engine, total, clock, claim.sender)
    marks = Marks(engine, claim, clock)
    heartbeat = Heartbeat(engine, claim, clock)
    active: Transport | None = None
    tried: set[int] = set()  # fresh digests that failed are retried ones now: not twice a pass
    sent_batches = 0
    heartbeat.start()
    read = outbox.PapersRead()  # each paper read once a pass
    spare = contextlib.ExitStack()
    spare_collector = spare.enter_context(sparing_the_collector())
    try:
        for retried in (False, True):  # the fresh first, then those tried before
            after = 0
            while not (stop is not None and stop.is_set()) and (
                rows := claims.claim(
                    engine,
                    claim.sender,
                    now=clock(),
                    lease=claim.lease,
                    after=after,
                    limit=batch,
                    retried=retried,
                )
            ):
                after = rows[-1].digest_id
                waiting = [row for row in rows if row.digest_id not in tried]
                tried.update(row.digest_id for row in waiting)
                if not waiting:
                    continue
                if active is None:
                    active = open_transport() if transport is None else transport
                spare_collector()
                await deliver(
                    engine,
                    outgoing_of(engine, links, waiting, read),
                    builder,
                    active,
                    sender_addr=sender_addr,
                    clock=clock,
                    concurrency=concurrency,
                    marks=marks,
                    stop=stop,
                    judge=judge,
                    spare=spare_collector,
                )
                sent_batches += 1
                if total.stopped or total.gave_up:
                    return total
                if batches is not None and sent_batches >= batches:
                    return total
            if stop is not None and stop.is_set():
                total.stopped = True
                return total
    finally:
        spare.close()
        await heartbeat.stop()
        judge.finish()
        if active is not None and transport is None:
            await active.close()
        _give_back(engine, claim.sender)
    return total


def _give_back(engine: Engine, sender: str) -> None:
    """What this pass claimed and did not send goes back to every sender at once; when the
    database cannot be reached, the claims run out by themselves."""
    try:
        claims.release(engine, sender)
    except DigestError as exc:
        log.warning("claims left to run out", extra={"error": str(exc)})


def _lost(item: Outgoing, result: Delivered) -> None:
    """The sender's lease on this digest ran out and another sender took it: the outcome is
    the other's to write, and this one writes nothing over it."""
    result.claims_lost += 1
    log.warning("claim lost", extra={"email": item.email, "digest": item.digest_id})


def _set_aside(engine: Engine, sender: str, item: Outgoing, reason: str, result: Delivered) -> None:
    """This digest cannot go to this address by this transport: record why and go on."""
    if not outbox.mark_failed(engine, item.digest_id, reason, sender=sender):
        _lost(item, result)
        return
    result.failed += 1
    result.set_aside.append((item.email, reason))
    log.warning("set aside", extra={"email": item.email, "error": reason})


def _failed(
    engine: Engine,
    sender: str,
    item: Outgoing,
    exc: DeliveryError,
    result: Delivered,
    now: datetime,
) -> None:
    """Record a failed send: a bounce ends mail to the address; a 4xx judged the
    recipient's costs an attempt; a dropped connection costs nothing. The last two wait
    their turn. Nothing is written when ``sender`` lost the digest's claim."""
    error = str(exc)[:500]
    outcome = unsent.record_failure(
        engine,
        item.digest_id,
        item.subscriber_id,
        sender=sender,
        error=error,
        counts=exc.counts,
        permanent=exc.permanent,
        max_attempts=MAX_ATTEMPTS,
        fail_after=FAIL_AFTER,
        now=now,
    )
    if outcome is None:
        _lost(item, result)
        return
    if outcome == "pending":
        result.deferred += 1
        result.last_error = error
        return
    result.failed += 1
    if outcome == "bounced":
        result.bounced.append(item.email)
        log.warning("bounced", extra={"email": item.email, "error": error})


def record_transport(engine: Engine, label: str, delivered: Delivered, now: datetime) -> None:
    """Remember how the transport fared (see ``outbox.record_transport``)."""
    outbox.record_transport(engine, label, gave_up=delivered.gave_up, sent=delivered.sent, now=now)
