"""`python -m jobs.serve --config NAME_OR_FILE [key=value ...]`: `rdistill serve`, for `ray job submit`.

Serve an exported student with Ray Serve (POST /recommend) on 127.0.0.1.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("serve")
