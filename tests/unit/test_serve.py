"""The serving check: a real HTTP server on 127.0.0.1 answers the module's example request during ``fit``."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import Tensor

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.serve import ServableModule, ServableModuleValidator
from torchbolt.utilities.exceptions import MisconfigurationException

HAS_FASTAPI = importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("uvicorn") is not None
SERVERS = ["stdlib", pytest.param("fastapi", marks=pytest.mark.skipif(not HAS_FASTAPI, reason="needs fastapi"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Doubler(BoringModel, ServableModule):
    """Answers ``{"y": 2 * x}``; records what ``serve_step`` saw."""

    def __init__(self, expected: list[float] | None = None) -> None:
        super().__init__()
        self.expected = expected
        self.seen: list[tuple[Tensor, bool, bool]] = []

    def configure_payload(self) -> dict[str, Any]:
        return {"body": {"x": [1.0, 2.0, 3.0]}}

    def configure_serialization(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"x": lambda x: torch.tensor(x)}, {"y": lambda y: y.tolist()}

    def serve_step(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        self.seen.append((x, self.training, torch.is_grad_enabled()))
        return {"y": 2 * x}

    def configure_response(self) -> dict[str, Any]:
        return {"y": self.expected if self.expected is not None else [2.0, 4.0, 6.0]}


def fit(model: BoringModel, validator: ServableModuleValidator) -> Trainer:
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[validator],
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("server", SERVERS)
def test_round_trip_during_fit(server: str) -> None:
    model = Doubler()
    validator = ServableModuleValidator(server=server, port=free_port(), timeout=10)  # type: ignore[arg-type]
    assert validator.successful is None and not validator.resolved
    trainer = fit(model, validator)

    assert trainer.global_step == 1  # training went on after the check
    assert validator.resolved and validator.successful is True
    assert validator.resp is not None and validator.resp.status_code == 200
    assert validator.resp.json() == {"y": [2.0, 4.0, 6.0]}
    [(x, training, grad)] = model.seen
    assert torch.equal(x, torch.tensor([1.0, 2.0, 3.0]))  # the deserializer ran
    assert not training and not grad  # served in eval mode without autograd
    assert model.training  # ... and the train mode came back for training
    assert validator.state_dict() == {"successful": True, "optimization": None, "server": server}


@pytest.mark.skipif(not HAS_FASTAPI, reason="needs fastapi")
def test_fastapi_server_is_used_when_installed() -> None:
    validator = ServableModuleValidator(server="fastapi", port=free_port(), timeout=10)
    fit(Doubler(), validator)
    assert validator.resp is not None and "uvicorn" in validator.resp.headers.get("server", "")


def test_fastapi_falls_back_to_the_standard_library(monkeypatch: pytest.MonkeyPatch) -> None:
    # an entry of None in sys.modules makes `import fastapi` fail, as on a machine without it
    monkeypatch.setitem(sys.modules, "fastapi", None)
    validator = ServableModuleValidator(server="fastapi", port=free_port())
    fit(Doubler(), validator)
    assert validator.successful is True
    assert validator.resp is not None and "BaseHTTP" in validator.resp.headers.get("Server", "")


def test_port_zero_picks_a_free_port() -> None:
    validator = ServableModuleValidator(server="stdlib", port=0)
    fit(Doubler(), validator)
    assert validator.successful is True


@pytest.mark.parametrize("server", SERVERS)
def test_wrong_answer_raises_with_exit_on_failure(server: str) -> None:
    validator = ServableModuleValidator(server=server, port=free_port(), timeout=10)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match=r"not servable: the answer .* differs from `configure_resp"):
        fit(Doubler(expected=[0.0]), validator)
    assert validator.resolved and validator.successful is False


def test_wrong_answer_warns_without_exit_on_failure() -> None:
    validator = ServableModuleValidator(server="stdlib", port=free_port(), exit_on_failure=False)
    with pytest.warns(UserWarning, match="not servable"):
        trainer = fit(Doubler(expected=[0.0]), validator)
    assert trainer.global_step == 1
    assert validator.successful is False
    assert validator.resp is not None and validator.resp.json() == {"y": [2.0, 4.0, 6.0]}


@pytest.mark.parametrize("server", SERVERS)
def test_serve_step_error_is_reported_with_its_traceback(server: str) -> None:
    class Broken(Doubler):
        def serve_step(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
            raise ValueError("bad shape in serve_step")

    validator = ServableModuleValidator(server=server, port=free_port(), timeout=10)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="answered 500.*bad shape in serve_step"):
        fit(Broken(), validator)
    assert validator.successful is False


def test_module_that_is_not_servable_is_refused() -> None:
    with pytest.raises(TypeError, match="subclasses `torchbolt.serve.ServableModule`; BoringModel does not"):
        fit(BoringModel(), ServableModuleValidator(server="stdlib", port=free_port()))


def test_payload_without_body_is_refused() -> None:
    class NoBody(Doubler):
        def configure_payload(self) -> dict[str, Any]:
            return {"x": [1.0]}

    with pytest.raises(ValueError, match='must return a dict with a "body" entry'):
        fit(NoBody(), ServableModuleValidator(server="stdlib", port=free_port()))


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(NotImplementedError, match="optimization='trace'"):
        ServableModuleValidator(optimization="trace")
    with pytest.raises(NotImplementedError, match="server='torchserve'"):
        ServableModuleValidator(server="torchserve")
    with pytest.raises(ValueError, match="port=-1"):
        ServableModuleValidator(port=-1)


def test_import_torchbolt_does_not_import_serving(subprocess_env: dict[str, str]) -> None:
    code = "import sys, torchbolt; print([m for m in ('torchbolt.serve', 'fastapi', 'uvicorn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
