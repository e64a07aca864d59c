"""`python -m jobs.teacher_infer --config NAME_OR_FILE [key=value ...]`: `rdistill teacher-infer`, for `ray job submit`.

Batch-infer the teacher's top-K, embeddings and hidden states with Ray Data; writes signals/.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("teacher-infer")
