"""`python -m jobs.predict`: segment a few images, or a folder, on this machine without Ray.

What the reference's inference scripts do, with the batch job's own reading, model loading,
image path (`jobs.common.image_prediction`) and output layout, so its masks equal the job's.
"""

from .cli import COMMAND, main, predict
from .config import PredictConfig

__all__ = ["COMMAND", "PredictConfig", "main", "predict"]
