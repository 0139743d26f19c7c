"""Reference Controller: a real HTTP server implementing the Controller contract.

It simulates DAG execution (honouring task dependencies), sends status callbacks, and can
inject faults (latency, errors, outages, hangs, rejections, rate caps, lost workloads) so
AIMTP can be exercised locally and in tests. See ``controller_sim.cli`` for the command line.
"""

from controller_sim.faults import FaultConfig, Faults
from controller_sim.server import ControllerSim, SimConfig, SimState, create_app
from controller_sim.workloads import DURATION_ANNOTATION, WorkloadStore

__all__ = [
    "DURATION_ANNOTATION",
    "ControllerSim",
    "FaultConfig",
    "Faults",
    "SimConfig",
    "SimState",
    "WorkloadStore",
    "create_app",
]
