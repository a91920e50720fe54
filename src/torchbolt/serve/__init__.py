"""Checking that a model can be served over HTTP: :class:`ServableModule` and :class:`ServableModuleValidator`.

Nothing here is imported by ``import torchbolt``; the optional FastAPI/uvicorn server is imported only when a
check runs.
"""

from torchbolt.serve.servable_module import ServableModule
from torchbolt.serve.servable_module_validator import ServableModuleValidator

__all__ = ["ServableModule", "ServableModuleValidator"]
