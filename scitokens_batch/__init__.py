"""scitokens-batch: a batch-system integration simulator for SciTokens / WLCG bearer tokens.

General layout (each layer imports only the ones below it; design.md, "Layers")::

    cli.py        thin command line
    scenario/     scenario files -> attrs specs, world wiring, runners, faults
    actors/       issuer, token manager, queue manager, execute host, data server, FTS, Rucio
    transport/    the seam: in-memory network (virtual time) and HTTP(S) (live mode)
    metrics/      append-only event records, statistics, summary, reports
    protocol/     pure messages, the job state table, back-off
    tokens/       pure token logic: claims, scopes, keys, encode/verify, discovery, renewal

The public API of the token core is :mod:`scitokens_batch.tokens`.
"""

from ._version import __version__ as __version__

__all__ = ["__version__"]
