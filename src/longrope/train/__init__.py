"""Fine-tuning at an extended length with a fixed RoPE scaling spec (chunked loss, PoSE, LongRoPE2 mixed windows).

The saved output directory's format (model directory, metadata, checkpoints) is `longrope.train.saved`'s.
The progressive recipe that chains search -> fine-tune -> search ... lives above this package, in
`longrope.recipes`.
"""

from longrope.train.config import SCHEDULES, FinetuneConfig
from longrope.train.finetuning import ChunkedCausalLMLoss, finetune, mean_nll
from longrope.train.saved import finetuned_dir, is_finetuned, latest_checkpoint, load_finetuned, save_finetuned

__all__ = [
    "SCHEDULES", "ChunkedCausalLMLoss", "FinetuneConfig", "finetune", "finetuned_dir", "is_finetuned",
    "latest_checkpoint", "load_finetuned", "mean_nll", "save_finetuned",
]
