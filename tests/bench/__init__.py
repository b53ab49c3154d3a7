"""`make bench`: atomsync's performance figures, each against a baseline measured in the same run.

Run with `python -m tests.bench` (the `bench` target). Every benchmark drives the real CLI in
a subprocess against the loopback simulators, as the end-to-end tests do; nothing here is
collected by pytest (no `test_*` modules) and nothing here runs in `make test`.
See docs/performance.md for what each figure means.
"""
