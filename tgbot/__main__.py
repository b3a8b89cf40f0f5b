import sys

from depthpilot.service import run_service
from tgbot.service import SERVICE

sys.exit(run_service(SERVICE))
