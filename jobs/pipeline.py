"""`python -m jobs.pipeline --config jobs/configs/<dataset>.yaml [--profile quick|full] [key=value ...]`: same as
`rdistill run`. Under `ray job submit` every stage runs on that cluster (RAY_ADDRESS is set by Ray); the artifact
root must then be storage every node sees."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("run")
