"""``python -m controller_sim``: run the reference Controller without the aimtp CLI."""

import argparse
import sys

from controller_sim.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="controller_sim", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
