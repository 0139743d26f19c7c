"""aimtp-trigger: turns DAG events into Controller workloads, exactly once in effect."""

from consumers.app import Trigger
from consumers.handlers import Result, TriggerHandler
from consumers.main import run_trigger

__all__ = ["Result", "Trigger", "TriggerHandler", "run_trigger"]
