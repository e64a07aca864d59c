"""`python -m jobs.prepare --config NAME_OR_FILE [key=value ...]`: `rdistill prepare`, for `ray job submit`.

Interaction logs -> dataset/ (items, users, leave-one-out train/valid/test Parquet).
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("prepare")
