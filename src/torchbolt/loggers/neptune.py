"""``NeptuneLogger``: kept at Lightning's path for code that imports it; Neptune's service has been shut down.

Lightning 2.6 replaced its Neptune logger with one that refuses to be created, because the hosted Neptune
service was sunset: a run could no longer be sent anywhere. torchbolt does the same, so code written
against Lightning gets the same outcome here, with a message that names the replacement.
"""

from __future__ import annotations

from typing import Any

_SUNSET_MESSAGE = (
    "`NeptuneLogger` is no longer supported: the Neptune service has been shut down, so there is nowhere to"
    " send a run. Use another logger instead, e.g. `torchbolt.loggers.LitLogger` (Lightning.ai's hosted"
    " logger, `pip install litlogger`), `MLFlowLogger`, `WandbLogger`, `TensorBoardLogger` or `CSVLogger`."
)


class NeptuneLogger:
    """The Neptune logger's name, which cannot be created (as in Lightning 2.6).

    Any arguments Lightning's earlier Neptune logger took (``api_key``, ``project``, ``name``, ``run``,
    ``log_model_checkpoints``, ``prefix``, ``**neptune_run_kwargs``) are accepted and ignored.

    Raises:
        RuntimeError: always, naming the loggers to use instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(_SUNSET_MESSAGE)
