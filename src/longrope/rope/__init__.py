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
from longrope.rope.geometry import RopeGeometry
from longrope.rope.preset_files import preset_names
from longrope.rope.presets import Preset, check_preset_fits, load_preset, write_preset
from longrope.rope.spec import (
    METHODS,
    SPEC_FILE,
    DynamicNTKSpec,
    LinearSpec,
    Llama3Spec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    RopeSpec,
    StringSpec,
    YarnSpec,
    from_rope_parameters,
    load_spec,
    make_spec,
    save_spec,
    spec_from_dict,
    spec_from_json,
    to_rope_parameters,
)
from longrope.rope.string_map import string_relative_positions

__all__ = [
    "METHODS", "ROPE_FUNCTIONS", "SPEC_FILE", "DynamicNTKSpec", "LinearSpec", "Llama3Spec", "LongRopeSpec", "NTKSpec",
    "NoScaling", "Preset", "RopeGeometry", "RopeSpec", "StringSpec", "YarnSpec", "base_inv_freq",
    "check_preset_fits", "from_rope_parameters", "inv_freq_for", "load_preset", "load_spec",
    "longrope_attention_factor", "make_spec", "ntk_base", "preset_names", "rescale_factors", "save_spec",
    "spec_from_dict", "spec_from_json", "string_relative_positions", "to_rope_parameters", "write_preset",
    "yarn_attention_factor",
]
