"""`python -m jobs.export --config NAME_OR_FILE [key=value ...]`: `rdistill export`, for `ray job submit`.

Export a saved student with its item table to serving/model/ for the endpoint.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("export")
