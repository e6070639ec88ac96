"""The benchmark suite ``pouw-bench`` (benchmarks/cli.py) and its results; see benchmarks/README.md."""
