"""The stages of rdistill, one module each, declared in the registry (rdistill/stages/registry.py)."""

from rdistill.stages.registry import (Stage, StageContext, pipeline_stages, run_stage, stage,  # noqa: F401
                                      stages)
