"""Experiments outside the core stages: the core never imports this package (tests/test_architecture.py)."""
