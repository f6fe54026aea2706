"""One training loop for every trained model (:mod:`.trainer`), its hooks, tasks and run folder."""

from amodalkit.engine.hooks import Hook, TimeBudget
from amodalkit.engine.tasks import TrainTask, make_task
from amodalkit.engine.trainer import TrainConfig, Trainer, train_model

__all__ = ["Hook", "TimeBudget", "TrainConfig", "TrainTask", "Trainer", "make_task", "train_model"]
