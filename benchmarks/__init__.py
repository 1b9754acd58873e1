"""The benchmark suite of ciba-middleware: ``python -m benchmarks --help``.

Every figure it prints is a ratio against a baseline measured in the same run, from
alternating rounds, as a median. See ``benchmarks/README.md`` and ``docs/performance.md``.
"""
