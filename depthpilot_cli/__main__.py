from depthpilot_cli.main import app

app(prog_name="depthpilot")
