"""Drive python ``scitokens`` 1.9.7 for the interop tests (run as a script, never imported).

Reads ``{"ops": [...]}`` as JSON on stdin and writes
``{"version": ..., "cache": <KeyCache sqlite file>, "results": [...]}`` on stdout, one result
per op. It runs in a fresh process whose ``XDG_CACHE_HOME`` is the test's temporary directory,
so the ``KeyCache`` singleton is created there (G4, G12). The ops:

``{"op": "preload", "issuer", "kid", "public_pem"}``
    ``KeyCache.getinstance().addkeyinfo(...)``, valid for a day, no refresh for an hour
    (peers.md a.). Result ``{}``.
``{"op": "verify", "token", "public_pem" | null, "enforce": null | {"issuer", "audience",
"tests": [[authz, path], ...]}}``
    ``SciToken.deserialize(token, public_key=...)`` (``null``: from the key cache), then for
    each test ``Enforcer(issuer, audience).test(token, authz, path)`` (G7, G10). Result
    ``{"deserialized": bool, "error": str | null, "claims": {...}, "tests": [{"authz", "path",
    "granted", "failure"}]}``.
``{"op": "mint", "private_pem", "alg", "kid", "issuer", "lifetime", "claims": {...}}``
    ``SciToken(key=..., algorithm=alg, key_id=kid)``, ``update_claims(claims)``,
    ``serialize(issuer=issuer, lifetime=lifetime)`` (G1). Result ``{"token": str}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    """Run the ops read from stdin."""
    import scitokens
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )
    from scitokens.utils.keycache import KeyCache

    request = json.load(sys.stdin)
    cache = KeyCache.getinstance()
    results: list[dict[str, Any]] = []
    for op in request["ops"]:
        kind = op["op"]
        if kind == "preload":
            cache.addkeyinfo(
                op["issuer"],
                op["kid"],
                load_pem_public_key(op["public_pem"].encode()),
                cache_timer=86400,
                next_update=3600,
            )
            results.append({})
        elif kind == "verify":
            public = op["public_pem"]
            try:
                token = scitokens.SciToken.deserialize(
                    op["token"], public_key=public.encode() if public else None
                )
            except Exception as exc:
                results.append(
                    {"deserialized": False, "error": f"{type(exc).__name__}: {exc}", "tests": []}
                )
                continue
            tests = []
            enforce = op.get("enforce")
            if enforce:
                for authz, path in enforce["tests"]:
                    enforcer = scitokens.Enforcer(enforce["issuer"], audience=enforce["audience"])
                    granted = enforcer.test(token, authz, path)
                    tests.append(
                        {
                            "authz": authz,
                            "path": path,
                            "granted": granted,
                            "failure": enforcer.last_failure,
                        }
                    )
            results.append(
                {
                    "deserialized": True,
                    "error": None,
                    "claims": dict(token.claims()),
                    "tests": tests,
                }
            )
        elif kind == "mint":
            key = load_pem_private_key(op["private_pem"].encode(), password=None)
            token = scitokens.SciToken(key=key, algorithm=op["alg"], key_id=op["kid"])
            token.update_claims(op["claims"])
            serialized = token.serialize(issuer=op["issuer"], lifetime=op["lifetime"])
            if isinstance(serialized, bytes):
                serialized = serialized.decode("ascii")
            results.append({"token": serialized})
        else:
            raise ValueError(f"unknown op {kind!r}")
    json.dump(
        {"version": scitokens.__version__, "cache": cache.cache_location, "results": results},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
