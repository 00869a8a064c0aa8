"""``make bench``: nine benchmarks of the gateway against the sandbox referee, each run at least three times
beside its baseline; results in docs/BENCHMARKS.md (only from a full run of a clean tree).

Run ``python -m tests.bench [NAME ...] [--runs N] [--quick]`` (see ``__main__``). No file here starts with
``test_``, so pytest never collects the benchmarks.
"""
