"""`python -m jobs.train_student --config jobs/configs/<dataset>.yaml [key=value ...]`: same as
`rdistill train-student`."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("train-student")
