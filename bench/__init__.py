"""Benchmarks of MEDCARE Screen (issue #5): synthetic populations, a naive baseline, measures.

Nothing here is imported by the service; `python -m bench.run` is the one entry point that
reproduces bench/README.md. Every figure is measured on loopback only and every loop is bounded.
"""

from __future__ import annotations

import argparse


def command_line(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of `python -m <module>`, described by its docstring's first paragraph."""
    first = (doc or "").split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"python -m {module}", description=first)
