"""AIMTP's benchmark harness: ``make bench`` (``python -m bench --help``), see README.md."""
