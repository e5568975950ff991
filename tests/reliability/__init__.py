"""Reliability tests: faults, crashes, concurrency, hostile input and leakage.

Every figure these tests produce is recorded in docs/reliability.md. Slow
variants carry the ``slow`` marker and run with ``python -m pytest -m slow``.
"""
