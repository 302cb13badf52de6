"""Derived channels: signals computed from other channels' signals, declared in
``<channels dir>/<name>.derived.toml`` (files.py), compiled by a whitelisting walk of
Python's expression grammar (expr.py), with stateful operators exact across batch
splits (ops.py), computed live by the stripchart's hub and by the exports (live.py,
export.py)."""
