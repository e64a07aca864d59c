"""`python -m jobs.train_teacher --config jobs/configs/<dataset>.yaml [key=value ...]`: same as
`rdistill teacher train`. Under `ray job submit` it joins that cluster (RAY_ADDRESS is set by Ray)."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("teacher", "train")
