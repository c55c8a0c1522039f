"""Searched specs shipped with longrope (JSON files; see `longrope.rope.presets`)."""
