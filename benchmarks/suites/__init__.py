"""The suites of ``pouw-bench``: each module has ``NAME``, ``DESCRIPTION`` and ``run(ctx) -> SuiteReport``."""
