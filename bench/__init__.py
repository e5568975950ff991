"""Reproducible benchmarks of childvault against the peers named in the issues.

Run ``python -m bench`` from the repository root (see ``bench/__main__.py``);
it writes ``docs/benchmarks.md``.
"""
