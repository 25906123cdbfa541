"""A canary JWT in every form field of every issuer endpoint, at debug log level: it comes back
in no answer, and lands in no log line and no event; no issued token is logged either."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
import trio

from scitokens_batch.protocol import wire as w

from .helpers import Live, live

pytestmark = pytest.mark.live


def _b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


#: Header and payload of a real-looking JWT; the signature part is the canary's own mark.
SIGNATURE = "Q0FOQVJZLXNpZ25hdHVyZS1kby1ub3QtbGVhaw"
CANARY = f"{_b64({'alg': 'ES256', 'kid': 'canary'})}.{_b64({'sub': 'canary-7f3a'})}.{SIGNATURE}"
#: What must never be found: the signature, and the payload (the header is common to JWTs).
MARKS = (SIGNATURE, CANARY.split(".")[1])

FIELDS = (
    "client_id",
    "client_secret",
    "grant_type",
    "scope",
    "audience",
    "refresh_token",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "device_code",
    "token",
    "token_type_hint",
    "user_code",
    "user",
)
ENDPOINTS = ("token", "device_authorization", "revoke", "device")


@pytest.fixture(name="svc", scope="module")
def _svc() -> Iterator[Live]:
    yield from live(("vo",), log_level="debug")


def _forms(svc: Live) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(form, headers) pairs: the canary in each field, with a valid client and without, and
    as the HTTP Basic user and password."""
    basic = {"Authorization": w.basic_header("token_manager", svc.tm_secret)}
    good = {"grant_type": "refresh_token", "refresh_token": "rt-x", "user_code": "BCDF-GHJK"}
    forms: list[tuple[dict[str, str], dict[str, str]]] = []
    for field in FIELDS:
        forms.append(({**good, field: CANARY}, basic))
        forms.append(({**good, "client_id": "token_manager", field: CANARY}, {}))
    forms.append((good, {"Authorization": w.basic_header(CANARY, "s")}))
    forms.append((good, {"Authorization": w.basic_header("token_manager", CANARY)}))
    forms.append(({**good, CANARY: "x"}, basic))
    return forms


def test_canary_in_every_field_is_never_echoed_logged_or_recorded(svc: Live) -> None:
    """Every field of every form endpoint, the Basic credentials and a form key carry the
    canary: no answer, no log line (debug level), no event holds it."""
    forms = _forms(svc)

    async def attack() -> list[httpx.Response]:
        answers = []
        async with svc.client() as client:
            for endpoint in ENDPOINTS:
                url = f"{svc.run.issuer_urls['vo']}/{endpoint}"
                for form, headers in forms:
                    answers.append(await client.post(url, data=form, headers=headers))
        return answers

    answers = trio.run(attack)
    assert len(answers) == len(ENDPOINTS) * len(forms)
    assert all(a.status_code < 500 for a in answers)
    echoed = [a.text for a in answers if any(m in a.text for m in MARKS)]
    assert echoed == []
    # The echo paths were exercised: the canary came back, as a marker only.
    assert any("<jwt sha256:" in a.text for a in answers)
    for path in (svc.log("vo"), svc.events("vo")):
        text = path.read_text()
        assert text  # the attack was logged and recorded, just not the canary
        assert not any(m in text for m in MARKS), path
    assert "<jwt sha256:" in svc.events("vo").read_text()


def test_issued_tokens_are_not_logged(svc: Live) -> None:
    """A device login and two refreshes at debug level: neither the access tokens nor the
    refresh tokens appear in the issuer's log or events."""
    rt = svc.login()

    async def refreshes() -> list[dict[str, str]]:
        docs = []
        token = rt
        async with svc.client() as client:
            for _ in range(2):
                answer = await svc.refresh(client, token)
                assert answer.status_code == 200
                docs.append(answer.json())
                token = answer.json()["refresh_token"]
        return docs

    docs = trio.run(refreshes)
    secrets = [rt] + [d["refresh_token"] for d in docs] + [d["access_token"] for d in docs]
    for path in (svc.log("vo"), svc.events("vo")):
        text = path.read_text()
        assert not any(s in text for s in secrets), path
        assert not any(s.split(".")[-1] in text for s in secrets if s.count(".") == 2), path
