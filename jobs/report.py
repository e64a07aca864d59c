"""`python -m jobs.report --config jobs/configs/<dataset>.yaml [--out DIR] [--measure-latency] [key=value ...]`: same
as `rdistill report`. Under `ray job submit` the artifact root must be the storage the pipeline wrote to."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("report")
