"""Rate limits and counters every process and host shares, in the store: three processes
hold one client to one limit, concurrent subscribes of one address give one row and one
email, and senders share one pace. On SQLite, and on PostgreSQL when
DIGEST_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.pace import SharedPace
from digest.store.counters import SharedLimit, book_turns
from digest.store.engine import open_store
from digest.store.subscribers import Requested, request_subscription
from digest.store.subscription import SubscriptionPatch
from digest.web.subscription import CLIENT_LIMIT
from tests.conftest import Site
from tests.smtp_server import free_port
from tests.test_service import wait_until

NOW = datetime(2026, 3, 11, 9, 30, tzinfo=UTC)
WANTED = SubscriptionPatch(
    interests=["graphs"], max_items=20, min_score=0.0, frequency="daily", timezone=None
)

_LIMITER = """
import sys
from digest.store.counters import SharedLimit
from digest.store.engine import open_store
limit = SharedLimit(open_store(sys.argv[1]), "subscribe-client", 20, 3600)
sys.stdin.readline()  # every process is up: go together
print(sum(limit.allow("203.0.113.9", 1773221400.0) for _ in range(20)))
"""


def test_three_processes_share_one_rate_limit(database_url: str) -> None:
    open_store(database_url).dispose()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _LIMITER, database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    allowed = [int(process.communicate(timeout=60)[0]) for process in processes]
    assert sum(allowed) == 20, allowed  # 60 asked, 20 a window, however they interleave


def test_a_limit_counts_per_key_and_window(engine: Engine) -> None:
    limit = SharedLimit(engine, "per-address", 2, 3600)
    start = 1773219600.0  # on the hour
    assert [limit.allow("ada", start + n) for n in range(3)] == [True, True, False]
    assert limit.allow("bob", start)  # another address has its own count
    assert SharedLimit(engine, "other", 2, 3600).allow("ada", start)  # and another limit
    assert limit.allow("ada", start + 3600)  # the next window starts afresh
    with engine.connect() as conn:  # the windows that ended are gone
        rows = conn.execute(sa.text("SELECT count(*) FROM ratecounter")).scalar()
    assert rows == 1


def test_twenty_concurrent_requests_of_one_new_address_give_one_row_and_one_email(
    engine: Engine,
) -> None:
    start = threading.Barrier(20)

    def ask(_: int) -> Requested | None:
        start.wait()
        return request_subscription(engine, ["ada@example.org"], WANTED, now=NOW, sends_allowed=5)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    fresh = [answer for answer in answers if answer is not None and not answer.repeat]
    repeats = [answer for answer in answers if answer is not None and answer.repeat]
    assert len(fresh) == 1 and len(repeats) == 19  # one email; the others wait for it
    assert {answer.nonce for answer in repeats} == {fresh[0].nonce}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, status, confirm_sends FROM subscriber")).all()
    assert [tuple(row) for row in rows] == [("ada@example.org", "pending", 1)]


def test_senders_book_turns_that_never_overlap(engine: Engine) -> None:
    now = 1773221400.25
    with ThreadPoolExecutor(3) as pool:
        spans = sorted(pool.map(lambda _: book_turns(engine, 4, 2, now), range(6)))
    # four a second, two turns a booking: half a second each, one after another from now
    assert spans == [pytest.approx((now + n / 2, now + (n + 1) / 2)) for n in range(6)]
    # the pace idle since: the next turns start at once, not where the last ones ended
    assert book_turns(engine, 4, 1, now + 10) == pytest.approx((now + 10, now + 10.25))
    # below one a second; a span that is no whole number of milliseconds is rounded up
    assert book_turns(engine, 0.5, 1, 2000.0, name="slow") == (2000.0, 2002.0)
    assert book_turns(engine, 3, 1, 2000.0, name="odd") == (2000.0, 2000.334)
    assert book_turns(engine, 0, 5, now) == (now, now)  # no pace set: no turns booked


class FakeTime:
    """A clock that moves only when the pace sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_three_senders_sharing_the_pace_send_no_faster_than_it_together(engine: Engine) -> None:
    rate = 100
    paces = [SharedPace(engine, rate) for _ in range(3)]
    taken: list[float] = []

    async def connection(pace: SharedPace) -> None:
        for _ in range(20):
            await pace.wait()
            taken.append(time.time())

    async def go() -> None:  # three senders of two connections each, all at once
        await asyncio.gather(*(connection(pace) for pace in paces for _ in range(2)))

    asyncio.run(go())
    taken.sort()
    assert len(taken) == 120
    # a hundred a second for the three together (not each): 120 sends take 1.19 s at least
    assert taken[-1] - taken[0] >= 119 / rate - 0.01
    # in any tenth of a second, at most ten, and one block (ten turns) more
    assert max(bisect_right(taken, t + 0.1) - i for i, t in enumerate(taken)) <= 10 + 10 + 1
    # booked in blocks, not one turn at a time (120); a loaded machine, whose late turns
    # are dropped and shrink the next block, books more often than a quiet one
    assert sum(pace.bookings for pace in paces) <= 120 / 2


def test_a_turn_taken_too_late_is_dropped_and_the_next_block_is_smaller(engine: Engine) -> None:
    clock = FakeTime(1773221400.0)
    pace = SharedPace(engine, 100, clock=clock, sleep=clock.sleep)

    async def go() -> None:
        for _ in range(7):  # blocks of 1, 2, 4: used up, growing
            await pace.wait()
        assert pace.size == 4 and len(pace.turns) == 0
        await pace.wait()  # a block of 8 (no more than 10: a tenth of a second)
        assert pace.size == 8
        clock.now += 1  # the mail server was slow: the other 7 turns are long gone
        await pace.wait()
        assert pace.size == 1  # as many as were used of the last

    asyncio.run(go())


# --- three `digest web` processes on one store ------------------------------------------


@contextlib.contextmanager
def web_processes(site: Site, database_url: str, count: int = 3) -> Iterator[list[int]]:
    """``count`` `digest web` processes over one store; nothing shared but database_url."""
    site.env.pop("DIGEST_SECRET_KEY", None)  # the key is the store's
    site.env["DIGEST_DATABASE_URL"] = database_url
    open_store(database_url).dispose()  # made (or migrated) once, before they start
    ports = [free_port() for _ in range(count)]
    processes = []
    try:
        for n, port in enumerate(ports):
            log = (site.root / f"web{n}.log").open("w")
            env = {**site.env, "DIGEST_WEB_PORT": str(port), "DIGEST_DATA_DIR": f"data{n}"}
            processes.append(
                subprocess.Popen(
                    site.command("web"),
                    cwd=site.root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for port, process in zip(ports, processes, strict=True):
            wait_until(lambda p=port, q=process: _answers(p) or q.poll() is not None, "web")
            assert process.poll() is None, (site.root / "web0.log").read_text()
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
    logs = "".join((site.root / f"web{n}.log").read_text() for n in range(count))
    assert "Traceback" not in logs


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _form(port: int) -> tuple[str, str]:
    """The CSRF cookie and field of a subscribe form shown by the process on ``port``."""
    shown = httpx.get(f"http://127.0.0.1:{port}/subscribe")
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', shown.text)
    assert match is not None
    return shown.cookies["digest_csrf"], match.group(1)


def _post(port: int, cookie: str, csrf: str, address: str) -> int:
    return httpx.post(
        f"http://127.0.0.1:{port}/subscribe",
        data={"csrf": csrf, "email": address, "interests": "graphs"},
        cookies={"digest_csrf": cookie},
        timeout=30,
    ).status_code


def _clear_of_the_hour() -> None:
    """An hour's limit counts clock hours: keep a burst of requests inside one."""
    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 1)


def test_three_web_processes_hold_one_client_to_its_limit(site: Site, database_url: str) -> None:
    with web_processes(site, database_url) as ports:
        cookie, csrf = _form(ports[0])  # one form, posted to all three: one key
        _clear_of_the_hour()
        jobs = [(ports[n % 3], f"reader{n}@example.org") for n in range(60)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda job: _post(job[0], cookie, csrf, job[1]), jobs))
    assert sorted(set(answers)) == [200, 429]
    assert answers.count(200) == CLIENT_LIMIT[0] == 20
    assert len(site.received()) == 20


def test_concurrent_subscribes_of_one_address_on_three_processes_give_one_email(
    site: Site, database_url: str
) -> None:
    with web_processes(site, database_url) as ports:
        cookie, csrf = _form(ports[1])
        _clear_of_the_hour()
        with ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(lambda n: _post(ports[n % 3], cookie, csrf, "ada@example.org"), range(20))
            )
    assert all(status < 500 for status in answers), answers  # no UniqueViolation
    assert answers.count(200) >= 1 and set(answers) <= {200, 429}
    assert [rcpt for rcpt, _ in site.received()] == ["ada@example.org"]
    engine = open_store(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, status FROM subscriber")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("ada@example.org", "pending")]
