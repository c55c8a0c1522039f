"""Extend the context window of RoPE language models and measure it."""
