"""Opt-in and default speed tricks that reach into torch or transformers internals.

Each module names the private API it relies on and the versions it was checked against, and falls back
to the stock path when that API is missing.
"""
