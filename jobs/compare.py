"""`python -m jobs.compare --config NAME_OR_FILE [key=value ...]`: `rdistill compare`, for `ray job submit`.

Is distillation worth its teacher here? tuned plain students vs distilled ones, N seeds each.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("compare")
