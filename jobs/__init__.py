"""Thin `ray job submit` / `python -m jobs.<stage>` entrypoints over the rdistill library (see README)."""
