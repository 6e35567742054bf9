"""`make demo` / `birefnet demo` / `python -m jobs.demo`: a generated sample archive segmented on an
embedded local Ray, through the `segment` command as a user would run it."""

from .cli import COMMAND, DemoConfig, DemoModel, choose_weights, demo, main, make_samples

__all__ = ["COMMAND", "DemoConfig", "DemoModel", "choose_weights", "demo", "main", "make_samples"]
