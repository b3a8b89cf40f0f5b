import sys

from depthpilot.service import run_service
from notifier.service import SERVICE

sys.exit(run_service(SERVICE))
