"""Turning `lbm launch` flags and launcher files into a validated job submission."""
