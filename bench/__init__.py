"""Benchmarks of MEDCARE Screen (issue #5): synthetic populations, a naive baseline, measures.

Nothing here is imported by the service; `python -m bench.run` is the one entry point that
reproduces bench/README.md. Every figure is measured on loopback only and every loop is bounded.
"""
