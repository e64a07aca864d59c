"""`python -m jobs.evaluate --config NAME_OR_FILE [key=value ...]`: `rdistill evaluate`, for `ray job submit`.

Full-ranking HR/NDCG/MRR@K of a saved student or the popularity baseline.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("evaluate")
