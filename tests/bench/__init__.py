"""``make bench``: the five benchmarks of issue 4, measured at the sandbox referee; results in
docs/BENCHMARKS.md.

Run ``python -m tests.bench [pacing priority overhead throughput tokens] [--quick]``. No file here starts
with ``test_``, so pytest never collects the benchmarks.
"""
