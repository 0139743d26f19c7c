"""aimtp-watcher: enforces state deadlines and reconciles with the Controller."""

from sweeper.main import run_watcher
from sweeper.rules import Rules, SweepReport
from sweeper.watcher import Watcher

__all__ = ["Rules", "SweepReport", "Watcher", "run_watcher"]
