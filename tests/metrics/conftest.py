"""A small hand-written run shared by the table and report tests: 3 jobs, 4 tokens, every kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from scitokens_batch.metrics import Event, ListSink, Recorder

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SE1 = "https://se1.example"
SE2 = "https://se2.example"
READ_WRITE = "storage.read:/data storage.create:/out"


def _mint(
    jti: str, sub: str, client: str, grant: str, scope: str, aud: Any, iat: int, exp: int
) -> dict[str, Any]:
    return {
        "jti": jti,
        "token_sha": jti * 12,
        "sub": sub,
        "client": client,
        "grant": grant,
        "scope": scope,
        "aud": aud,
        "iat": iat,
        "exp": exp,
        "kid": "k1",
    }


def _use(
    job: int, path: str, jti: str | None, exp: int | None, headroom: float | None
) -> dict[str, Any]:
    return {
        "job": job,
        "op": "read",
        "path": path,
        "jti": jti,
        "exp": exp,
        "headroom_s": headroom,
        "status": 200,
        "cached": False,
    }


def _reject(
    job: int, reason: str, jti: str | None, exp: int | None, headroom: float | None
) -> dict[str, Any]:
    return {
        "job": job,
        "op": "write",
        "path": "/out/x",
        "status": 403,
        "reason": reason,
        "detail": "<b>no</b>",
        "jti": jti,
        "exp": exp,
        "headroom_s": headroom,
    }


#: (t, actor, kind, fields), in time order.
SCRIPT: list[tuple[float, str, str, dict[str, Any]]] = [
    (
        0,
        "issuer",
        "mint",
        _mint("a", "alice", "tm", "refresh_token", READ_WRITE, [SE1, SE2], 0, 1200),
    ),
    (
        0,
        "issuer",
        "request",
        {"endpoint": "token", "status": 200, "grant": "refresh_token", "error": None},
    ),
    (
        0,
        "token_manager",
        "refresh",
        {"user": "alice", "service": "se", "jti": "a", "exp": 1200, "initial": True},
    ),
    (0, "queue_manager", "submit", {"job": 1, "workload": "analysis", "user": "alice"}),
    (1, "queue_manager", "submit", {"job": 2, "workload": "analysis", "user": "bob"}),
    (2, "queue_manager", "submit", {"job": 3, "workload": "skim", "user": "alice"}),
    (
        5,
        "issuer",
        "mint",
        _mint("b", "bob", "tm", "refresh_token", "storage.read:/data", SE1, 5, 905),
    ),
    (10, "queue_manager", "execute", {"job": 1, "host": "exec1", "slot": 1}),
    (10.5, "exec1", "stage", {"job": 1, "service": "se", "jti": "a", "exp": 1200}),
    (20, "queue_manager", "execute", {"job": 2, "host": "exec1", "slot": 2}),
    (20.5, "exec1", "stage", {"job": 2, "service": "se", "jti": "b", "exp": 905}),
    (30, "queue_manager", "execute", {"job": 3, "host": "exec3", "slot": 1}),
    (40, "queue_manager", "held", {"job": 3, "code": 4, "reason": "input missing"}),
    (45, "queue_manager", "released", {"job": 3, "reason": "retry"}),
    (
        50,
        "queue_manager",
        "evicted",
        {"job": 1, "host": "exec1", "reason": "preempted", "lost_cpu_s": 40.0},
    ),
    (55, "queue_manager", "execute", {"job": 3, "host": "exec3", "slot": 1}),
    (60, "queue_manager", "execute", {"job": 1, "host": "exec2", "slot": 1}),
    (60.5, "exec2", "stage", {"job": 1, "service": "se", "jti": "a", "exp": 1200}),
    (100, "se1", "use", _use(1, "/data/f1", "a", 1200, 1100.0)),
    (100, "se1", "reject", _reject(2, "insufficient_scope", "b", 905, 805.0)),
    (110, "queue_manager", "held", {"job": 2, "code": 13, "reason": "token expired"}),
    (
        300,
        "issuer",
        "mint",
        _mint("c", "alice", "fts", EXCHANGE, "storage.read:/data", [SE2], 300, 600),
    ),
    (
        300,
        "issuer",
        "request",
        {"endpoint": "token", "status": 200, "grant": EXCHANGE, "error": None},
    ),
    (
        301,
        "issuer",
        "request",
        {
            "endpoint": "token",
            "status": 503,
            "grant": "refresh_token",
            "error": "temporarily_unavailable",
        },
    ),
    (
        302,
        "token_manager",
        "refresh_failed",
        {
            "user": "bob",
            "service": "se",
            "error": "temporarily_unavailable",
            "attempt": 1,
            "retry_in_s": 2.0,
        },
    ),
    (400, "se2", "use", _use(3, "/data/f3", "c", 600, 200.0)),
    (500, "se1", "use", _use(1, "/data/f1", "a", 1200, 700.0)),
    (650, "se2", "reject", _reject(3, "expired", "c", 600, -50.0)),
    (
        700,
        "issuer",
        "mint",
        _mint("d", "alice", "tm", "refresh_token", READ_WRITE, [SE1, SE2], 700, 1900),
    ),
    (
        700,
        "issuer",
        "request",
        {"endpoint": "token", "status": 200, "grant": "refresh_token", "error": None},
    ),
    (
        700,
        "token_manager",
        "refresh",
        {"user": "alice", "service": "se", "jti": "d", "exp": 1900, "initial": False},
    ),
    (710, "exec2", "stage", {"job": 1, "service": "se", "jti": "d", "exp": 1900}),
    (800, "se1", "reject", _reject(1, "wrong_audience", "d", 1900, 1100.0)),
    (1250, "se1", "use", _use(1, "/data/f2", "a", 1200, -50.0)),
    (1250, "se1", "reject", _reject(1, "malformed", None, None, None)),
    (1260, "se1", "use", _use(1, "/data/f2", "zzz", 2000, 740.0)),
    (
        1300,
        "queue_manager",
        "terminated",
        {
            "job": 1,
            "host": "exec2",
            "exit_code": 0,
            "status": "completed",
            "reason": "exited normally",
            "cpu_s": 140.0,
        },
    ),
    (
        1400,
        "queue_manager",
        "terminated",
        {
            "job": 3,
            "host": "exec3",
            "exit_code": 1,
            "status": "failed",
            "reason": "exited with status 1",
            "cpu_s": 12.5,
        },
    ),
]


def record(
    script: list[tuple[float, str, str, dict[str, Any]]],
    observers: Sequence[Callable[[Event], None]] = (),
) -> list[Event]:
    """Record a script through a real Recorder into a ListSink (and ``observers``), as a run would."""
    now = [0.0]
    sink = ListSink()
    recorder = Recorder(clock=lambda: now[0], sink=sink, observers=list(observers))
    for t, actor, kind, fields in script:
        now[0] = float(t)  # a real clock gives floats
        recorder.record(actor, kind, **fields)
    return sink.events


@pytest.fixture(name="events")
def _events() -> list[Event]:
    """The events of :data:`SCRIPT`."""
    return record(SCRIPT)
