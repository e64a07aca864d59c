"""`python -m jobs.export --config jobs/configs/<dataset>.yaml --model-dir <students/run> [key=value ...]`: same
as `rdistill export`."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("export")
