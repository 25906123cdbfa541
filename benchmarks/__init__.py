"""Performance report for scitokens-batch (``make bench``, ``python -m benchmarks``).

This is a report, not a test: it measures ops/s and µs/op on the machine it runs on, computes
the ratios that matter (ours against the raw ``cryptography`` floor and against the reference
libraries) paired per round, and prints PASS/MISS against the targets. It never fails a build.

* :mod:`benchmarks._timing`: the interleaved-rounds harness (reusable by any section).
* :mod:`benchmarks._report`: the machine line, rich/markdown/JSON rendering.
* :mod:`benchmarks.tokens`: the token-core section.
* :mod:`benchmarks.live`: real HTTPS services on loopback, ours next to XRootD (with its load
  generators :mod:`benchmarks._loadgen` and :mod:`benchmarks._curlload`).
* :mod:`benchmarks.sim`: the simulator's reference day against its crypto floor.
"""
