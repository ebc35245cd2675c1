"""Reproducible benchmarks of the provider against the sandbox portal and the alternatives (``make bench``)."""
