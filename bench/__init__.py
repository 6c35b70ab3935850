"""Benchmarks of the search service; run each as ``python -m bench.<name> --help``.

Every script prints its figures as ratios against a baseline measured in the same run (shared
machines are noisy; absolute times are not comparable between runs). ``bench/RESULTS.md``
keeps the latest figures and the machine they came from.
"""
