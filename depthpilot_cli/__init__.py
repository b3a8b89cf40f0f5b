"""The depthpilot command line and the one-process run: the composition root above the services."""
