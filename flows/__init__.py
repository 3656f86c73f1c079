"""Prefect flows: wiring only. Run each file directly, e.g. `python flows/full_study.py --help`."""
