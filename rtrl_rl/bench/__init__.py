"""Benchmark suites: ``rtrl-bench suite=NAME`` runs tasks x methods x seeds resumably and
writes a report (``suite.py``: the config and the grid; ``launcher.py``: running it;
``random_policy.py``: the random floor; ``report.py``: the tables and plots; ``app.py``: the
Hydra entry point)."""
