"""`python -m jobs.run --config NAME_OR_FILE [--profile quick|full] [key=value ...]`: `rdistill run`, the whole pipeline.

Under `ray job submit` every stage runs on that cluster (RAY_ADDRESS is set by Ray); the artifact root must then be
storage every node sees.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("run")
