"""`python -m jobs.tune_students --config jobs/configs/<dataset>.yaml [--fresh] [key=value ...]`: same as
`rdistill tune`. Under `ray job submit` it joins that cluster (RAY_ADDRESS is set by Ray), and trials spread over
its nodes; the artifact root must then be storage every node sees."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("tune")
