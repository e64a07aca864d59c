"""`python -m jobs.infer_teacher --config jobs/configs/<dataset>.yaml [--force] [key=value ...]`: same as
`rdistill teacher infer`. Under `ray job submit` it joins that cluster (RAY_ADDRESS is set by Ray)."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("teacher", "infer")
