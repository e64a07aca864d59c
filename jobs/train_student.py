"""`python -m jobs.train_student --config NAME_OR_FILE [key=value ...]`: `rdistill train-student`, for `ray job submit`.

Train one student (student.name) with early stopping; writes students/<run>/.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("train-student")
