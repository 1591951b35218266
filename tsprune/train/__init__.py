from .finetune import FinetuneConfig, FinetuneResult, finetune  # noqa: F401
