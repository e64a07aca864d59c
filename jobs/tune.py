"""`python -m jobs.tune --config NAME_OR_FILE [key=value ...]`: `rdistill tune`, for `ray job submit`.

Search student settings and distillation weights with Ray Tune + Optuna TPE + ASHA; export the winner.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("tune")
