import sys

from depthpilot.service import run_service
from features.service import SERVICE

sys.exit(run_service(SERVICE))
