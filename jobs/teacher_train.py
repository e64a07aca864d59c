"""`python -m jobs.teacher_train --config NAME_OR_FILE [key=value ...]`: `rdistill teacher-train`, for `ray job submit`.

Fine-tune the language-model teacher with Ray Train + DeepSpeed; writes teacher/checkpoint/.
"""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("teacher-train")
