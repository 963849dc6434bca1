"""Machinery of the doc tests (tests/test_docs.py): reading the fenced blocks of README.md and docs/*.md."""
