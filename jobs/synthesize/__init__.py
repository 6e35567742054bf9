"""`birefnet synthesize` / `python -m jobs.synthesize`: a generated DIS5K-style set for training and tests."""

from .cli import COMMAND, SynthesizeConfig, main, scene_seed, synthesize

__all__ = ["COMMAND", "SynthesizeConfig", "main", "scene_seed", "synthesize"]
