"""The :class:`ServableModule` mixin: the hooks a module implements to be served over HTTP."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class ServableModule(ABC, torch.nn.Module):
    """Mixin declaring how a module answers an HTTP request; checked by :class:`ServableModuleValidator`.

    A request is a JSON object whose ``"body"`` maps argument names to JSON values. Serving one goes:

    1. each ``body[name]`` that has a deserializer (first dict of :meth:`configure_serialization`) is
       replaced by ``deserializer(body[name])``, typically turning a list into a tensor;
    2. ``serve_step(**body)`` runs under ``torch.no_grad()`` with the module in eval mode and returns a dict;
    3. each ``output[name]`` that has a serializer (second dict) is replaced by ``serializer(output[name])``,
       typically turning a tensor into a list, and the dict is sent back as JSON.

    Mix it into a LightningModule (``class Model(LightningModule, ServableModule)``) and implement the
    four methods below; a class that leaves one of them out cannot be instantiated.

    Example::

        class ServableModel(LightningModule, ServableModule):
            def configure_payload(self):
                return {"body": {"x": [0.0, 1.0, 2.0]}}

            def configure_serialization(self):
                return {"x": lambda x: torch.tensor(x)}, {"y": lambda y: y.tolist()}

            def serve_step(self, x):
                return {"y": self(x)}

            def configure_response(self):
                return {"y": [...]}  # what the model should answer to ``configure_payload()``
    """

    @abstractmethod
    def configure_payload(self) -> dict[str, Any]:
        """Return an example request: a JSON-serializable dict with a ``"body"`` entry."""

    @abstractmethod
    def configure_serialization(self) -> tuple[dict[str, Callable], dict[str, Callable]]:
        """Return ``(deserializers, serializers)``.

        ``deserializers`` maps names of :meth:`serve_step` arguments to functions turning the JSON value of
        that name in the request body into what ``serve_step`` takes (e.g. a tensor). ``serializers`` maps
        keys of the dict ``serve_step`` returns to functions turning those values into JSON values.
        """

    @abstractmethod
    def serve_step(self, *args: Tensor, **kwargs: Tensor) -> dict[str, Tensor]:
        """Compute the answer to one request; called with the deserialized body as keyword arguments.

        Must return a dict (e.g. ``{"predictions": self(x)}``); its values are passed through the serializers.
        """

    @abstractmethod
    def configure_response(self) -> dict[str, Any]:
        """Return the JSON answer the server must give to :meth:`configure_payload`'s request."""
