"""The token-core section: our mint and verify against raw ``cryptography`` and the references.

What is timed (one operation each):

* raw ``cryptography``: ES256 (P-256, ECDSA-SHA256, DER signatures) and RS256 (2048 bits,
  PKCS#1 v1.5, SHA-256) sign and verify with key objects, over the signing inputs
  (``header.payload``) of real tokens of ours;
* ours: :func:`scitokens_batch.tokens.encode` on prebuilt claims ("mint"), and
  :func:`~scitokens_batch.tokens.build_claims` + ``encode`` ("mint incl. claims");
  :meth:`~scitokens_batch.tokens.Verifier.check` with the accepted-token cache off and the keys
  preloaded, over a pool of distinct tokens, and :meth:`~scitokens_batch.tokens.Verifier.authorize`
  (the same plus the scope check); and a cache hit (``token_cache=60``, one token again and again);
* references: PyJWT ``jwt.encode`` / ``jwt.decode`` with key objects and all their checks on
  (time, audience, issuer), and scitokens-py 1.9.7 ``SciToken.deserialize`` (PEM public key: its
  ``public_key`` argument goes through ``load_pem_public_key``, so a key object is not accepted)
  followed by ``Enforcer.test(token, "read", path)`` on one reused ``Enforcer``.

PyJWT and scitokens-py check the time against the wall clock, so every token is minted at the real
time with a 600 s lifetime; our verifier is given ``now`` = mint time + 1 s. scitokens-py's key
cache (sqlite, not used when a key is passed in, but created) lives in a temporary
``XDG_CACHE_HOME`` removed at the end.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from itertools import cycle, islice, repeat
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from scitokens_batch.tokens import (
    Algorithm,
    KeyCachePolicy,
    Operation,
    ParsedToken,
    Profile,
    SigningKey,
    TrustedIssuer,
    VerifiedToken,
    Verifier,
    audience_matches,
    authorize,
    build_claims,
    check_claims,
    check_times,
    encode,
    parse,
    parse_scopes,
    signature_valid,
    verifier_for,
)

from ._timing import Benchmark, Ratio, Section, SectionOptions

__all__ = ["AUDIENCE", "ISSUER", "READ_PATH", "SCOPES", "section"]

ISSUER = "https://tokens.example.org"
AUDIENCE = "https://data.example.org"
SUBJECT = "alice"
SCOPES = ("read:/frames", "write:/results/run42")
READ_PATH = "/frames/x"
#: scitokens-py's Enforcer reads the wall clock: tokens must stay valid for the whole run.
LIFETIME = 600
#: Distinct tokens cycled through by the verify benchmarks (nothing can be cached).
POOL = 2000
POOL_QUICK = 300

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

Run = Callable[[int], None]

_RAW = "raw cryptography"
_MINT = "ours: mint"
_VERIFY = "ours: verify"
_REF = "reference libraries"
_STEPS = "breakdown: steps of ours (ES256)"


class _Fixture:
    """Keys, token pools and verifiers shared by the benchmark closures."""

    def __init__(self, pool: int) -> None:
        rng = random.Random(20261121)
        self.es = SigningKey.generate(Algorithm.ES256)
        self.rs = SigningKey.generate(Algorithm.RS256)
        self.t0 = time.time()
        self.now = float(int(self.t0)) + 1.0
        self.jtis = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(pool)]
        self.claims = [self.build(jti) for jti in self.jtis]
        self.tokens = {
            alg: [encode(c, key) for c in self.claims]
            for alg, key in ((Algorithm.ES256, self.es), (Algorithm.RS256, self.rs))
        }
        # First sight of every token: the verifier's parse memo is off, so each check parses,
        # as a server does for a token it has not seen (the targets are measured on this).
        self.verifiers = {
            alg: verifier_for(ISSUER, [AUDIENCE], [key.public], now=self.now)
            for alg, key in ((Algorithm.ES256, self.es), (Algorithm.RS256, self.rs))
        }
        # The signature memo is off too: these measure the signature check itself.
        for v in self.verifiers.values():
            v.parse_memo = 0
            v.signature_memo = 0
        # A token seen before: parse memoised, signature and times still checked every time.
        self.seen = verifier_for(ISSUER, [AUDIENCE], [self.es.public], now=self.now)
        self.seen.signature_memo = 0
        self.cached = Verifier(
            issuers=[TrustedIssuer(ISSUER)],
            audiences=[AUDIENCE],
            token_cache=60.0,
            key_policy=KeyCachePolicy(refresh=float("inf"), expiry=float("inf")),
        )
        self.cached.keys_fetched(ISSUER, [self.es.public], now=self.now)

    def build(self, jti: str) -> dict[str, Any]:
        """The claims of one benchmark token (SciTokens 2.0, two scopes, 600 s lifetime)."""
        return build_claims(
            profile=Profile.SCITOKENS,
            issuer=ISSUER,
            subject=SUBJECT,
            audience=AUDIENCE,
            scopes=SCOPES,
            issued_at=self.t0,
            lifetime=LIFETIME,
            jti=jti,
        )

    def key(self, alg: Algorithm) -> SigningKey:
        """The signing key for ``alg``."""
        return self.es if alg is Algorithm.ES256 else self.rs

    def signing_inputs(self, alg: Algorithm) -> list[bytes]:
        """``header.payload`` of every pool token of ``alg``."""
        return [t.rsplit(".", 1)[0].encode("ascii") for t in self.tokens[alg]]


# -- benchmark bodies: each returns run(n), which performs n operations ----------------------


def _raw_sign(key: SigningKey, msgs: Sequence[bytes]) -> Run:
    priv = key.key
    args: tuple[Any, ...] = (
        (_ECDSA_SHA256,) if isinstance(priv, ec.EllipticCurvePrivateKey) else (_PKCS1, _SHA256)
    )
    sign = priv.sign

    def run(n: int) -> None:
        for m in islice(cycle(msgs), n):
            sign(m, *args)

    return run


def _raw_verify(key: SigningKey, msgs: Sequence[bytes]) -> Run:
    priv = key.key
    ecdsa = isinstance(priv, ec.EllipticCurvePrivateKey)
    args: tuple[Any, ...] = (_ECDSA_SHA256,) if ecdsa else (_PKCS1, _SHA256)
    pairs = [(priv.sign(m, *args), m) for m in msgs]  # DER for ECDSA
    verify = key.public.key.verify
    for sig, m in pairs[:3]:
        verify(sig, m, *args)  # raises InvalidSignature if the fixture is wrong

    def run(n: int) -> None:
        for sig, m in islice(cycle(pairs), n):
            verify(sig, m, *args)

    return run


def _encode(key: SigningKey, claims: Sequence[dict[str, Any]]) -> Run:
    def run(n: int) -> None:
        for c in islice(cycle(claims), n):
            encode(c, key)

    return run


def _mint(fx: _Fixture, key: SigningKey) -> Run:
    build = fx.build

    def run(n: int) -> None:
        for jti in islice(cycle(fx.jtis), n):
            encode(build(jti), key)

    return run


def _check(verifier: Verifier, tokens: Sequence[str], now: float) -> Run:
    check = verifier.check

    def run(n: int) -> None:
        for t in islice(cycle(tokens), n):
            check(t, now=now)

    return run


def _authorize(verifier: Verifier, tokens: Sequence[str], now: float) -> Run:
    auth = verifier.authorize
    read = Operation.READ

    def run(n: int) -> None:
        for t in islice(cycle(tokens), n):
            auth(t, now=now, op=read, path=READ_PATH)

    return run


def _cache_hit(verifier: Verifier, token: str, now: float) -> Run:
    check = verifier.check

    def run(n: int) -> None:
        for _ in repeat(None, n):
            check(token, now=now)

    return run


def _pyjwt_encode(key: SigningKey, claims: Sequence[dict[str, Any]]) -> Run:
    priv, headers, alg = key.key, {"kid": key.kid}, key.alg.value

    def run(n: int) -> None:
        for c in islice(cycle(claims), n):
            jwt.encode(c, priv, algorithm=alg, headers=headers)

    return run


def _pyjwt_decode(key: SigningKey, tokens: Sequence[str]) -> Run:
    pub, algs = key.public.key, [key.alg.value]
    decode = jwt.decode

    def run(n: int) -> None:
        for t in islice(cycle(tokens), n):
            decode(t, pub, algorithms=algs, audience=AUDIENCE, issuer=ISSUER)

    return run


def _scitokens(key: SigningKey, tokens: Sequence[str]) -> Run:
    import scitokens  # imported late: XDG_CACHE_HOME must be set first

    pem = key.public.public_pem()
    deserialize = scitokens.SciToken.deserialize
    enforcer = scitokens.Enforcer(ISSUER, audience=AUDIENCE)

    def run(n: int) -> None:
        for t in islice(cycle(tokens), n):
            enforcer.test(deserialize(t, public_key=pem, audience=AUDIENCE), "read", READ_PATH)

    return run


# -- breakdown: the steps of Verifier.check / encode, timed one by one -----------------------


def _each(items: Sequence[Any], fn: Callable[[Any], object]) -> Run:
    def run(n: int) -> None:
        for item in islice(cycle(items), n):
            fn(item)

    return run


def _breakdown(fx: _Fixture) -> list[Benchmark]:
    """The public steps :meth:`Verifier.check` and :func:`encode` are made of, one by one."""
    key = fx.es
    tokens = fx.tokens[Algorithm.ES256]
    parsed = [p for p in map(parse, tokens) if isinstance(p, ParsedToken)]
    claims = [p.claims for p in parsed]
    now = fx.now
    cache = fx.verifiers[Algorithm.ES256].keys
    auds = frozenset([AUDIENCE])
    scopes = parse_scopes(claims[0]["scope"])
    verified = VerifiedToken(
        claims=claims[0], profile=Profile.SCITOKENS, scopes=scopes, base_path="/"
    )
    priv = key.key
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    der = priv.sign(b"x", _ECDSA_SHA256)
    payload = json.dumps(claims[0], separators=(",", ":")).encode()

    def lookup(p: ParsedToken) -> object:
        cache.fetch_due(ISSUER, p.kid, now=now)
        return cache.lookup(ISSUER, p.kid, now=now)

    def raw_sig(sig: bytes) -> bytes:
        r, s = decode_dss_signature(sig)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    steps: list[tuple[str, str, Run, str]] = [
        ("parse", "tokens.parse", _each(tokens, parse), "split, base64url, 2× json.loads"),
        ("claims", "check_claims", _each(claims, check_claims), "profile and claim shapes"),
        ("key", "keys.fetch_due + lookup", _each(parsed, lookup), "key cache, kid present"),
        (
            "sig",
            "signature_valid",
            _each(parsed, lambda p: signature_valid(p, key.public)),
            "raw→DER + verify",
        ),
        ("times", "check_times", _each(claims, lambda c: check_times(c, now=now)), ""),
        (
            "aud",
            "audience_matches",
            _each(claims, lambda c: audience_matches(c["aud"], auds, Profile.SCITOKENS)),
            "",
        ),
        ("scopes", "parse_scopes", _each(claims, lambda c: parse_scopes(c["scope"])), "2 scopes"),
        (
            "verified",
            "VerifiedToken(...)",
            _each(claims, lambda c: VerifiedToken(c, Profile.SCITOKENS, scopes, "/")),
            "result object",
        ),
        (
            "authorize",
            "authorize (scopes only)",
            _each([verified], lambda v: authorize(v.scopes, Operation.READ, READ_PATH)),
            "read on /frames/x",
        ),
        ("build", "build_claims", _each(fx.jtis, fx.build), "mint incl. claims − mint"),
        (
            "json",
            "json.dumps claims (compact)",
            _each(claims, lambda c: json.dumps(c, separators=(",", ":"))),
            "as encode does",
        ),
        (
            "b64",
            "base64url payload",
            _each([payload], lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")),
            "as encode does",
        ),
        ("dss", "DER → r‖s", _each([der], raw_sig), "as encode does"),
    ]
    return [
        Benchmark(f"step.{k}", label, run, group=_STEPS, note=note) for k, label, run, note in steps
    ]


def _validate(fx: _Fixture) -> None:
    """Refuse to time anything that does not actually succeed (a rejection is much cheaper)."""
    for alg, verifier in fx.verifiers.items():
        for t in fx.tokens[alg]:
            verdict = verifier.authorize(t, now=fx.now, op=Operation.READ, path=READ_PATH)
            if not isinstance(verdict, VerifiedToken):
                raise RuntimeError(
                    f"benchmark token refused by our {alg.value} verifier: {verdict}"
                )
    token = fx.tokens[Algorithm.ES256][0]
    for _ in range(2):
        if not isinstance(fx.cached.check(token, now=fx.now), VerifiedToken):
            raise RuntimeError("benchmark token refused by the caching verifier")
    if fx.cached.statistics().cache_hits < 1:
        raise RuntimeError("the caching verifier did not answer from its cache")


def _reference_problems(fx: _Fixture) -> list[str]:
    """Wall-clock libraries: check that a token still passes (before and after the run)."""
    import scitokens

    problems: list[str] = []
    for alg in (Algorithm.ES256, Algorithm.RS256):
        key, token = fx.key(alg), fx.tokens[alg][-1]
        try:
            jwt.decode(
                token, key.public.key, algorithms=[alg.value], audience=AUDIENCE, issuer=ISSUER
            )
            st = scitokens.SciToken.deserialize(
                token, public_key=key.public.public_pem(), audience=AUDIENCE
            )
        except Exception as exc:  # reported, not raised: this is a report
            problems.append(f"{alg.value}: reference library refused a benchmark token: {exc!r}")
            continue
        enforcer = scitokens.Enforcer(ISSUER, audience=AUDIENCE)
        if not enforcer.test(st, "read", READ_PATH):
            problems.append(f"{alg.value}: scitokens Enforcer.test failed: {enforcer.last_failure}")
    return problems


def section(options: SectionOptions) -> Section:
    """Build the fixtures (keys, token pools, verifiers) and the token-core benchmarks."""
    cache_dir = tempfile.mkdtemp(prefix="bench-scitokens-")
    old_xdg = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = cache_dir

    def close() -> None:
        if old_xdg is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old_xdg
        shutil.rmtree(cache_dir, ignore_errors=True)

    try:
        fx = _Fixture(POOL_QUICK if options.quick else POOL)
        _validate(fx)
        problems = _reference_problems(fx)
        if problems:
            raise RuntimeError("; ".join(problems))
    except BaseException:
        close()
        raise

    es, rs, now = fx.es, fx.rs, fx.now
    es_tok, rs_tok = fx.tokens[Algorithm.ES256], fx.tokens[Algorithm.RS256]
    es_in, rs_in = fx.signing_inputs(Algorithm.ES256), fx.signing_inputs(Algorithm.RS256)
    es_v, rs_v = fx.verifiers[Algorithm.ES256], fx.verifiers[Algorithm.RS256]
    pool = len(fx.jtis)

    benchmarks = [
        Benchmark("raw.es256.sign", "ES256 sign", _raw_sign(es, es_in), _RAW, "DER out"),
        Benchmark("raw.es256.verify", "ES256 verify", _raw_verify(es, es_in), _RAW, "DER in"),
        Benchmark("raw.rs256.sign", "RS256 sign", _raw_sign(rs, rs_in), _RAW, "2048 bit"),
        Benchmark("raw.rs256.verify", "RS256 verify", _raw_verify(rs, rs_in), _RAW, "2048 bit"),
        Benchmark("ours.es256.mint", "ES256 mint", _encode(es, fx.claims), _MINT, "encode()"),
        Benchmark("ours.rs256.mint", "RS256 mint", _encode(rs, fx.claims), _MINT, "encode()"),
        Benchmark(
            "ours.es256.mint_claims",
            "ES256 mint incl. claims",
            _mint(fx, es),
            _MINT,
            "build_claims() + encode()",
        ),
        Benchmark(
            "ours.rs256.mint_claims",
            "RS256 mint incl. claims",
            _mint(fx, rs),
            _MINT,
            "build_claims() + encode()",
        ),
        Benchmark(
            "ours.es256.check",
            "ES256 verify",
            _check(es_v, es_tok, now),
            _VERIFY,
            f"Verifier.check, cache off, {pool} tokens, first sight",
        ),
        Benchmark(
            "ours.es256.check_seen",
            "ES256 verify, token seen before",
            _check(fx.seen, es_tok, now),
            _VERIFY,
            f"Verifier.check, cache off, parse memoised, signature checked, {pool} tokens",
        ),
        Benchmark(
            "ours.rs256.check",
            "RS256 verify",
            _check(rs_v, rs_tok, now),
            _VERIFY,
            f"Verifier.check, cache off, {pool} tokens, first sight",
        ),
        Benchmark(
            "ours.es256.authorize",
            "ES256 verify + scope",
            _authorize(es_v, es_tok, now),
            _VERIFY,
            "Verifier.authorize(READ, /frames/x)",
        ),
        Benchmark(
            "ours.rs256.authorize",
            "RS256 verify + scope",
            _authorize(rs_v, rs_tok, now),
            _VERIFY,
            "Verifier.authorize(READ, /frames/x)",
        ),
        Benchmark(
            "ours.cache_hit",
            "verified-token cache hit",
            _cache_hit(fx.cached, es_tok[0], now),
            _VERIFY,
            "Verifier.check, token_cache=60, same token",
        ),
        Benchmark(
            "pyjwt.es256.encode",
            "PyJWT encode ES256",
            _pyjwt_encode(es, fx.claims),
            _REF,
            "key object, kid header",
        ),
        Benchmark(
            "pyjwt.es256.decode",
            "PyJWT decode ES256",
            _pyjwt_decode(es, es_tok),
            _REF,
            "key object; exp/nbf/iat/aud/iss checked",
        ),
        Benchmark(
            "pyjwt.rs256.decode",
            "PyJWT decode RS256",
            _pyjwt_decode(rs, rs_tok),
            _REF,
            "key object; exp/nbf/iat/aud/iss checked",
        ),
        Benchmark(
            "scitokens.es256",
            "scitokens-py ES256",
            _scitokens(es, es_tok),
            _REF,
            "deserialize(PEM) + Enforcer.test(read)",
        ),
        Benchmark(
            "scitokens.rs256",
            "scitokens-py RS256",
            _scitokens(rs, rs_tok),
            _REF,
            "deserialize(PEM) + Enforcer.test(read)",
        ),
    ]
    if options.breakdown:
        benchmarks += _breakdown(fx)

    ratios = [
        Ratio(
            "target.verify_es256",
            "ours ES256 verify / raw ES256 verify",
            "ours.es256.check",
            "raw.es256.verify",
            minimum=0.75,
        ),
        Ratio(
            "target.mint_es256",
            "ours ES256 mint / raw ES256 sign",
            "ours.es256.mint",
            "raw.es256.sign",
            minimum=0.70,
        ),
        Ratio(
            "target.cache_hit",
            "verified-token cache hit (ops/s)",
            "ours.cache_hit",
            minimum=500_000,
            kind="throughput",
        ),
        Ratio(
            "verify_es256_extra",
            "ours ES256 verify: µs above raw verify",
            "ours.es256.check",
            "raw.es256.verify",
            kind="extra_us",
        ),
        Ratio(
            "mint_es256_extra",
            "ours ES256 mint: µs above raw sign",
            "ours.es256.mint",
            "raw.es256.sign",
            kind="extra_us",
        ),
        Ratio(
            "scope_extra",
            "ours ES256 scope check: authorize − check (µs)",
            "ours.es256.authorize",
            "ours.es256.check",
            kind="extra_us",
        ),
        Ratio(
            "authorize_es256",
            "ours ES256 verify + scope / raw ES256 verify",
            "ours.es256.authorize",
            "raw.es256.verify",
        ),
        Ratio(
            "mint_claims_es256",
            "ours ES256 mint incl. claims / raw ES256 sign",
            "ours.es256.mint_claims",
            "raw.es256.sign",
        ),
        Ratio(
            "verify_rs256",
            "ours RS256 verify / raw RS256 verify",
            "ours.rs256.check",
            "raw.rs256.verify",
        ),
        Ratio(
            "mint_rs256",
            "ours RS256 mint / raw RS256 sign",
            "ours.rs256.mint",
            "raw.rs256.sign",
        ),
        Ratio(
            "vs_pyjwt_es256",
            "ours ES256 verify / PyJWT decode ES256",
            "ours.es256.check",
            "pyjwt.es256.decode",
        ),
        Ratio(
            "vs_pyjwt_rs256",
            "ours RS256 verify / PyJWT decode RS256",
            "ours.rs256.check",
            "pyjwt.rs256.decode",
        ),
        Ratio(
            "vs_pyjwt_encode",
            "ours ES256 mint / PyJWT encode ES256",
            "ours.es256.mint",
            "pyjwt.es256.encode",
        ),
        Ratio(
            "vs_scitokens_es256",
            "ours ES256 verify + scope / scitokens-py ES256",
            "ours.es256.authorize",
            "scitokens.es256",
        ),
        Ratio(
            "vs_scitokens_rs256",
            "ours RS256 verify + scope / scitokens-py RS256",
            "ours.rs256.authorize",
            "scitokens.rs256",
        ),
        Ratio(
            "cache_vs_verify",
            "cache hit / ours ES256 verify",
            "ours.cache_hit",
            "ours.es256.check",
        ),
    ]

    notes = [
        f"Tokens: SciTokens 2.0, ES256 signing input {len(es_in[0])} B "
        f"(token {len(es_tok[0])} B), RS256 token {len(rs_tok[0])} B; "
        f"scopes `{' '.join(SCOPES)}`; {pool} distinct tokens per algorithm, cycled.",
        "Keys are `cryptography` key objects everywhere except scitokens-py, whose "
        "`deserialize(public_key=...)` takes only a PEM (it parses it on every call).",
        "PyJWT and scitokens-py check times against the wall clock (tokens minted at the real "
        "time, lifetime 600 s); ours gets `now` explicitly.",
    ]

    # The two sides of every paired ratio run next to each other (see run_interleaved).
    run_order = [
        "raw.es256.sign",
        "ours.es256.mint",
        "pyjwt.es256.encode",
        "ours.es256.mint_claims",
        "raw.es256.verify",
        "ours.es256.check",
        "ours.es256.authorize",
        "scitokens.es256",
        "pyjwt.es256.decode",
        "ours.cache_hit",
        "raw.rs256.verify",
        "ours.rs256.check",
        "pyjwt.rs256.decode",
        "ours.rs256.authorize",
        "scitokens.rs256",
        "raw.rs256.sign",
        "ours.rs256.mint",
        "ours.rs256.mint_claims",
    ]
    run_order += [b.key for b in benchmarks if b.key not in run_order]

    def postcheck() -> list[str]:
        return _reference_problems(fx)

    return Section(
        name="tokens",
        title="Token core",
        benchmarks=benchmarks,
        ratios=ratios,
        notes=notes,
        run_order=run_order,
        postcheck=postcheck,
        close=close,
    )
