"""`python -m jobs.prepare --config jobs/configs/<dataset>.yaml [key=value ...]`: same as `rdistill prepare`."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("prepare")
