"""The math of RoPE scaling, with no model code: specs, frequency tables, rescale factors, STRING's map."""

from longrope.rope.frequencies import (
    ROPE_FUNCTIONS,
    base_inv_freq,
    inv_freq_for,
    longrope_attention_factor,
    ntk_base,
    rescale_factors,
    yarn_attention_factor,
)
from longrope.rope import spec as _spec
from longrope.rope.geometry import RopeGeometry
from longrope.rope.preset_files import preset_names
from longrope.rope.presets import Preset, check_preset_fits, load_preset, write_preset
from longrope.rope.spec import *  # noqa: F403 -- the spec API, listed once in spec.__all__
from longrope.rope.string_map import string_relative_positions

__all__ = [
    *_spec.__all__, "ROPE_FUNCTIONS", "Preset", "RopeGeometry", "base_inv_freq", "check_preset_fits",
    "inv_freq_for", "load_preset", "longrope_attention_factor", "ntk_base", "preset_names", "rescale_factors",
    "string_relative_positions", "write_preset", "yarn_attention_factor",
]
