"""`python -m jobs.report --config NAME_OR_FILE [key=value ...]`: `rdistill report`, for `ray job submit`.

Write report.md and report.html with plots (PNG) over what the artifact root holds.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("report")
