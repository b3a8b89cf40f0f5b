import sys

from depthpilot.service import run_service
from predictor.service import SERVICE

sys.exit(run_service(SERVICE))
