"""summary.json, built by folding the event stream (the one source of every figure).

:class:`SummaryBuilder` observes events as they are recorded (or replays an events.jsonl), so the
summary can never disagree with the events. The paths below are a contract (design.md,
"summary.json paths"): add more, never rename.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from ._events import Event

__all__ = ["DENIAL_REASONS", "SummaryBuilder", "percentile"]

#: Every `data.denied.<reason>` path exists, zero or not (design.md lists them).
DENIAL_REASONS = (
    "expired",
    "not_yet_valid",
    "bad_signature",
    "unknown_key",
    "untrusted_issuer",
    "wrong_audience",
    "insufficient_scope",
    "malformed",
    "missing_token",
)

_JOB_STATE_AFTER = {
    "submit": "idle",
    "execute": "running",
    "held": "held",
    "released": "idle",
    "evicted": "idle",
}


def percentile(sorted_values: array[float] | list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by nearest rank of already sorted values; None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    return sorted_values[rank - 1]


@attrs.define
class SummaryBuilder:
    """Folds events into the figures of summary.json."""

    _kinds: Counter[str] = attrs.field(factory=Counter, alias="_kinds")
    _job_state: dict[int, str] = attrs.field(factory=dict, alias="_job_state")
    _holds: Counter[int] = attrs.field(factory=Counter, alias="_holds")
    _denied: Counter[str] = attrs.field(factory=Counter, alias="_denied")
    _headroom: array[float] = attrs.field(factory=lambda: array("d"), alias="_headroom")
    _issuer_per_second: Counter[int] = attrs.field(factory=Counter, alias="_issuer_per_second")
    _n: dict[str, float] = attrs.field(factory=dict, alias="_n")
    #: the data servers' verifier work (signatures computed, signature memo hits): not in the
    #: events, handed over by the run at its end (None: unknown, e.g. live mode or XRootD)
    _work: tuple[int, int] | None = attrs.field(default=None, alias="_work")

    def verifier_work(self, signature_checks: int, memo_hits: int) -> None:
        """Report the data servers' verifier counters, summed, at the end of a run.

        They say how the simulator computed the verdicts, not what happened in the simulated
        world, so no event carries them: ``data.signature_checks`` and
        ``data.signature_memo_hits`` are null until this is called.
        """
        self._work = (signature_checks, memo_hits)

    def _add(self, key: str, amount: float = 1) -> None:
        self._n[key] = self._n.get(key, 0) + amount

    def __call__(self, ev: Event) -> None:
        """Take one event (a :class:`Recorder` observer)."""
        kind = ev.kind
        f = ev.fields
        self._kinds[kind] += 1
        if kind == "use" or kind == "reject":
            self._add("data.accesses")
            headroom = f.get("headroom_s")
            expired = headroom is not None and headroom <= 0
            if kind == "use":
                self._add("data.granted")
                if headroom is not None:
                    self._headroom.append(headroom)
                if expired:
                    self._add("data.accepted_after_exp")
                if f.get("cached"):
                    self._add("data.cache_hits")
            else:
                self._denied[f["reason"]] += 1
            if expired:
                self._add("data.expired_at_use")
            return
        state = _JOB_STATE_AFTER.get(kind)
        if state is not None:
            self._job_state[f["job"]] = state
            if kind == "held":
                self._holds[f["code"]] += 1
            elif kind == "evicted":
                self._add("jobs.lost_cpu_s", f.get("lost_cpu_s", 0.0))
            return
        if kind == "terminated":
            self._job_state[f["job"]] = f["status"]
            self._add("jobs.cpu_s", f.get("cpu_s", 0.0))
        elif kind == "request":
            self._issuer_per_second[math.floor(ev.t)] += 1
            if f["status"] >= 400:
                self._add("issuer.errors")
            if f["status"] == 503:
                self._add("issuer.rate_limited")
        elif kind == "mint":
            if f.get("grant") == "urn:ietf:params:oauth:grant-type:token-exchange":
                self._add("tokens.exchanged")
        elif kind == "refresh":
            if not f.get("initial"):
                self._add("tokens.renewed")
        elif kind in _ISSUER_CLIENT_FAILURES:
            # A token request that got no answer at all (the token manager's and the transfer
            # service's refreshes, FTS exchanges, Rucio's requests) is an attempt the issuer
            # never saw (it was down or cut off): counted so that issuer.attempts shows a
            # retry storm.
            error = f.get("error")
            if isinstance(error, str) and error.startswith("issuer unreachable"):
                self._add("issuer.unreachable")
        elif kind == "jwks_fetch":
            self._add("keys.fetches")
            if not f.get("ok"):
                self._add("keys.fetch_failures")
        elif kind == "transfer_done":
            self._add("transfers.done")
        elif kind == "transfer_failed":
            self._add("transfers.failed")

    def _headroom_figures(
        self,
    ) -> tuple[int, float | None, float | None, float | None, float | None]:
        """Count, min, 1st percentile, median (nearest rank) and max of the headroom values.

        The values are sorted in place, in the builder's own 8-byte array (their order is no
        figure): ``sorted()`` would build a Python float and a list slot per value, 32 bytes
        each, 320 MB for the 10 million accesses of a day of 100,000 jobs. numpy's stable
        sort orders floats as ``sorted()`` does, so the figures are the same to the bit.
        """
        import numpy as np  # only here: the summary's one sort (scipy and pyarrow need it too)

        n = len(self._headroom)
        if n == 0:
            return 0, None, None, None, None
        values = np.frombuffer(self._headroom, dtype=np.float64)  # a view, no copy
        values.sort(kind="stable")
        found = (
            n,
            float(values[0]),
            float(values[max(1, math.ceil(0.01 * n)) - 1]),
            float(values[max(1, math.ceil(0.50 * n)) - 1]),
            float(values[-1]),
        )
        del values  # release the view: the array may grow again (a live summary)
        return found

    @property
    def event_count(self) -> int:
        """Events seen so far."""
        return sum(self._kinds.values())

    def feed(self, events: Iterable[Event]) -> SummaryBuilder:
        """Take many events (replaying an events.jsonl)."""
        for ev in events:
            self(ev)
        return self

    def figures(self) -> dict[str, Any]:
        """The nested figures of summary.json (without run metadata)."""
        n = self._n
        states = Counter(self._job_state.values())
        headroom = self._headroom_figures()

        def num(key: str) -> float:
            v = n.get(key, 0)
            return int(v) if float(v).is_integer() else round(v, 6)

        def rounded(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        return {
            "jobs": {
                "submitted": self._kinds["submit"],
                "completed": states["completed"],
                "failed": states["failed"],
                "running": states["running"],
                "idle": states["idle"],
                "held": states["held"],
                "holds": sum(self._holds.values()),
                "holds_by_code": {str(k): v for k, v in sorted(self._holds.items())},
                "evictions": self._kinds["evicted"],
                "cpu_s": num("jobs.cpu_s"),
                "lost_cpu_s": num("jobs.lost_cpu_s"),
                # jobs whose requirements no machine ad matches: they stay idle (issue 13)
                "unmatched": self._kinds["unmatched"],
            },
            "tokens": {
                "minted": self._kinds["mint"],
                "renewed": num("tokens.renewed"),
                "refresh_failures": self._kinds["refresh_failed"],
                "exchanged": num("tokens.exchanged"),
                "staged": self._kinds["stage"],
            },
            "data": {
                "accesses": num("data.accesses"),
                "granted": num("data.granted"),
                "denied": {r: self._denied.get(r, 0) for r in DENIAL_REASONS}
                | {r: c for r, c in sorted(self._denied.items()) if r not in DENIAL_REASONS},
                "expired_at_use": num("data.expired_at_use"),
                "accepted_after_exp": num("data.accepted_after_exp"),
                "cache_hits": num("data.cache_hits"),
                # the simulator's own work; cache_hits above are the modelled server's
                "signature_checks": None if self._work is None else self._work[0],
                "signature_memo_hits": None if self._work is None else self._work[1],
            },
            "headroom": {
                "count": headroom[0],
                "min_s": rounded(headroom[1]),
                "p01_s": rounded(headroom[2]),
                "p50_s": rounded(headroom[3]),
                "max_s": rounded(headroom[4]),
            },
            "issuer": {
                "requests": self._kinds["request"],
                "attempts": self._kinds["request"] + num("issuer.unreachable"),
                "unreachable": num("issuer.unreachable"),
                "peak_rps": max(self._issuer_per_second.values(), default=0),
                "errors": num("issuer.errors"),
                "rate_limited": num("issuer.rate_limited"),
            },
            "keys": {
                "fetches": num("keys.fetches"),
                "fetch_failures": num("keys.fetch_failures"),
            },
            "transfers": {
                "done": num("transfers.done"),
                "failed": num("transfers.failed"),
            },
        }


#: Event kinds in which a client reports a failed token request, with an ``error`` field.
_ISSUER_CLIENT_FAILURES: Final = frozenset(
    {"refresh_failed", "exchange_failed", "token_request_failed"}
)


def lookup(summary: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a nested summary; KeyError when absent."""
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node
