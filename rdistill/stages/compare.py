"""`rdistill compare`: tuned plain students against distilled ones, N seeds each: the verdict (rdistill/compare.py)."""

from __future__ import annotations

import sys
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.compare import compare_markdown, run_compare

    result = run_compare(context.config, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(compare_markdown(result), file=sys.stderr)
    target = context.layout.path(layout.compare_run(context.config.compare.name))
    return {"compare_dir": str(target), "verdicts": result["verdicts"], "seconds": result["seconds"]}


STAGE = Stage(
    name="compare",
    help="is distillation worth its teacher here? tuned plain students vs distilled ones, N seeds each",
    description=(
        "Run prepare, teacher-train and teacher-infer (skipped when up to date), then for each of compare.students: "
        "a search of the plain student's own hyper-parameters (tune.preset=plain) and a search of the distillation "
        "weights from the plain winner's settings, with the same compare.num_samples trials and compare.max_epochs "
        "cap; then compare.seeds runs of each winner and of the plain winner initialised from the teacher, each "
        "tested once. Writes <artifact_root>/compare/<compare.name>/compare.json and compare.md: popularity, the "
        "teacher, tuned plain, initialised and distilled students, mean ± std, gains, the verdict and each step's "
        "seconds. `--profile quick` runs a small budget in minutes."
    ),
    run=_run,
    # the upstream stages run inside (through the pipeline), so there is nothing to pull before
    writes=lambda context: [Address(layout.compare_run(context.config.compare.name))],
)
