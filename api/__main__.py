import sys

from api.service import SERVICE
from depthpilot.service import run_service

sys.exit(run_service(SERVICE))
