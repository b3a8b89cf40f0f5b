import sys

from depthpilot.service import run_service
from trader.service import SERVICE

sys.exit(run_service(SERVICE))
