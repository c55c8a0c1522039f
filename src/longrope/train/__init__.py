"""Fine-tuning at an extended length and the progressive extension recipe (search -> fine-tune -> search ...)."""

from longrope.train.config import SCHEDULES, FinetuneConfig
from longrope.train.finetuning import (
    ChunkedCausalLMLoss,
    finetune,
    finetuned_dir,
    is_finetuned,
    latest_checkpoint,
    load_finetuned,
    mean_nll,
    save_finetuned,
)
from longrope.train.plan import Plan, Stage, default_plan_path, load_plan, parse_plan
from longrope.train.progressive import STAGE_RUNNERS, extend

__all__ = [
    "SCHEDULES", "STAGE_RUNNERS", "ChunkedCausalLMLoss", "FinetuneConfig", "Plan", "Stage", "default_plan_path",
    "extend", "finetune", "finetuned_dir", "is_finetuned", "latest_checkpoint", "load_finetuned", "load_plan",
    "mean_nll", "parse_plan", "save_finetuned",
]
