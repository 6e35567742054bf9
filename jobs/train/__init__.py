"""`python -m jobs.train`: BiRefNet training on Ray Train, as the reference trains it.

list DIS5K-style pairs (connectors.training_pairs) -> Ray Data: decode + augment on CPU workers
(jobs.train.data) -> TorchTrainer workers (jobs.train.loop): BiRefNet's training forward and
losses (birefnet_core.losses), AdamW, per-step schedule, autocast, gradient accumulation, DDP ->
checkpoints with the released key names plus optimiser state (jobs.train.checkpoints), resumed
after a crash -> the final model.safetensors (jobs.train.run).
"""

from .cli import COMMAND, main, train
from .config import TrainConfig
from .run import TrainResult, run

__all__ = ["COMMAND", "TrainConfig", "TrainResult", "main", "run", "train"]
