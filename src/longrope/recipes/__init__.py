"""Recipes: pipelines that chain the library areas (search, fine-tune, export, evaluate) into one run.

- `plan`: the TOML plan of a progressive extension (stages and their settings), validated before anything runs;
- `progressive`: `extend`, the LongRoPE paper's progressive recipe run stage by stage, resumable;
- `compare`: the comparison of the progressive recipe against PI fine-tuned with the same budget;
- `demo`: `run_demo`, the whole story on the built-in tiny model;
- `cli`: the ``longrope extend`` and ``longrope demo`` commands.

Only this package (and the command-line layer) may import several areas; the areas never import it.
"""

from longrope.recipes.plan import Plan, Stage, default_plan_path, load_plan, parse_plan
from longrope.recipes.progressive import STAGE_RUNNERS, extend

__all__ = ["STAGE_RUNNERS", "Plan", "Stage", "default_plan_path", "extend", "load_plan", "parse_plan"]
