"""Every setting is declared once, in its config dataclass; the CLI options that expose it must agree with it.

For `SearchConfig` (``longrope search``) and `FinetuneConfig` (``longrope finetune``): each field is an option of
the same name (``--field-name``), or deliberately not on the command line (listed with the reason); and the
option's default is the field's default. A new field, or a default changed in one place only, fails here.
Earlier spellings of renamed options stay as aliases (listed here).
"""

from __future__ import annotations

import dataclasses

import pytest
import typer

from longrope.cli import app
from longrope.search.evolution import SearchConfig
from longrope.train.config import FinetuneConfig

# field -> the option's earlier spellings, still accepted.
ALIASES = {
    "search": {"target_length": ["--length"], "search_n_hat": ["--n-hat"],
               "search_attention": ["--attention", "--no-attention"]},
    "finetune": {"warmup_steps": ["--warmup"], "batch_size": ["--batch"], "mixed_precision": ["--precision"],
                 "gradient_checkpointing": ["--checkpointing", "--no-checkpointing"]},
}
# Fields with no option, and why: the library and plan files set them; the command line keeps to what users tune.
NOT_ON_CLI = {
    "search": {"mutation_prob": "the reference algorithm's constant",
               "attention_min": "bounds of --attention's range", "attention_max": "bounds of --attention's range",
               "data_seed": "which fitness documents; fixed, so searches with any --seed compare on one set",
               "estimated_parents": "an ablation switch of the racing rule",
               "chunk": "memory/speed knob of the chunked loss, same result"},
    "finetune": {"short_length": "length of --mixed windows (default: the original window)",
                 "keep_checkpoints": "disk housekeeping", "weight_decay": "optimizer detail, set in plans",
                 "max_grad_norm": "optimizer detail, set in plans", "loss_chunk": "memory knob, same result",
                 "log_every": "logging cadence"},
}
# Options whose default differs from the field's on purpose.
DEFAULTS = {
    ("search", "racing_rank"): (0, "0 on the command line means None: a quarter of the parents"),
    ("finetune", "length"): (None, "required by the config; the command checks it is given"),
    ("finetune", "steps"): (None, "required by the config; the command checks it is given"),
}
CONFIGS = {"search": SearchConfig, "finetune": FinetuneConfig}


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_each_config_field_is_an_option_with_the_same_default_or_listed(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    for field in dataclasses.fields(CONFIGS[command]):
        if field.name in NOT_ON_CLI[command]:
            assert field.name not in params, f"{field.name} is on the CLI now: remove it from NOT_ON_CLI"
            continue
        option = params.get(field.name)
        assert option is not None, f"`longrope {command}` has no option for {CONFIGS[command].__name__}.{field.name}"
        assert "--" + field.name.replace("_", "-") in option.opts, (field.name, option.opts)
        expected = DEFAULTS.get((command, field.name), (field.default,))[0]
        assert option.default == expected, (command, field.name, option.default, field.default)


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_earlier_spellings_still_work(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    for field, spellings in ALIASES[command].items():
        for spelling in spellings:
            assert spelling in params[field].opts + params[field].secondary_opts, (field, spelling)


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_the_lists_name_only_real_fields(command):
    names = {f.name for f in dataclasses.fields(CONFIGS[command])}
    listed = set(ALIASES[command]) | set(NOT_ON_CLI[command]) | {f for c, f in DEFAULTS if c == command}
    assert listed <= names, listed - names
