import sys

from collector.service import SERVICE
from depthpilot.service import run_service

sys.exit(run_service(SERVICE))
