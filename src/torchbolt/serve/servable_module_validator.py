"""The :class:`ServableModuleValidator` callback: serve the module over HTTP once, before training starts."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import traceback
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any, Literal

import torch

from torchbolt.callbacks.callback import Callback
from torchbolt.serve.servable_module import ServableModule
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_logger = logging.getLogger(__name__)

_SERVERS = ("fastapi", "stdlib")


class _ServeResponse:
    """The server's answer to the ``/serve`` request: ``status_code``, ``headers``, ``text`` and ``json()``."""

    def __init__(self, status_code: int, text: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.text = text
        self.headers = headers or {}

    def json(self) -> Any:
        """The body parsed as JSON (raises ``json.JSONDecodeError`` when it is not JSON)."""
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, text={self.text!r})"


def _fastapi_available() -> bool:
    try:  # imported only when a check runs, never by ``import torchbolt``
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def _answer(module: ServableModule, deserializers: dict[str, Callable], serializers: dict[str, Callable],
            payload: Any) -> tuple[int, Any]:
    """Serve one request payload: ``(HTTP status, JSON-able answer)``; errors give status 500 and a message."""
    try:
        if not isinstance(payload, dict) or not isinstance(payload.get("body"), dict):
            return 400, {"error": 'The request must be a JSON object with a "body" object.'}
        body = dict(payload["body"])
        for key, deserializer in deserializers.items():
            if key not in body:
                return 400, {"error": f"The request body has no {key!r} entry (a deserializer is declared for it)."}
            body[key] = deserializer(body[key])
        # grad mode is per thread: the server thread sets its own
        with torch.no_grad():
            output = module.serve_step(**body)
        if not isinstance(output, dict):
            return 500, {"error": f"`serve_step` must return a dict, got {type(output).__qualname__}."}
        output = dict(output)
        for key, serializer in serializers.items():
            if key in output:
                output[key] = serializer(output[key])
        json.dumps(output)  # fail here, with the traceback, when an output has no serializer
        return 200, output
    except Exception:
        return 500, {"error": traceback.format_exc()}


class _Server:
    """A server in a daemon thread answering ``GET /ping`` and ``POST /serve`` on an already bound socket."""

    def __init__(self, backend: str, sock: socket.socket, handle: Callable[[Any], tuple[int, Any]]) -> None:
        self._backend = backend
        self._sock = sock
        self._handle = handle
        self._stop: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        target = self._run_fastapi if self._backend == "fastapi" else self._run_stdlib
        self._thread = threading.Thread(target=target, name="torchbolt-serve-check", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()

    def _run_stdlib(self) -> None:
        handle = self._handle

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, answer: Any) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # the method names are fixed by http.server
                if self.path == "/ping":
                    self._send(200, True)
                else:
                    self._send(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                if self.path != "/serve":
                    self._send(404, {"error": f"no route {self.path}"})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(raw)
                except json.JSONDecodeError as err:
                    self._send(400, {"error": f"the request is not JSON: {err}"})
                    return
                self._send(*handle(payload))

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the training output clean

        httpd = HTTPServer(self._sock.getsockname()[:2], Handler, bind_and_activate=False)
        httpd.socket.close()
        httpd.socket = self._sock  # the socket bound (and listening) before the thread started
        self._stop = httpd.shutdown
        httpd.serve_forever(poll_interval=0.05)

    def _run_fastapi(self) -> None:
        import uvicorn
        from fastapi import Body, FastAPI
        from fastapi.responses import JSONResponse

        handle = self._handle
        app = FastAPI()

        @app.get("/ping")
        def ping() -> bool:
            return True

        # annotations stay strings here (postponed evaluation) and FastAPI resolves them in this module's
        # globals: only names defined there may appear
        @app.post("/serve", response_model=None)
        def serve(payload: Any = Body(...)) -> Any:
            status, answer = handle(payload)
            return JSONResponse(answer, status_code=status)

        server = uvicorn.Server(uvicorn.Config(app, log_level="error"))

        def stop() -> None:
            server.should_exit = True

        self._stop = stop
        server.run(sockets=[self._sock])


class ServableModuleValidator(Callback):
    """Check, when training starts, that the module answers an HTTP request the way it says it should.

    On ``on_train_start`` (global rank 0 only) the callback checks that the module is a
    :class:`~torchbolt.serve.ServableModule`, starts a server for it on ``host:port`` exposing ``GET /ping`` and
    ``POST /serve``, posts :meth:`~ServableModule.configure_payload` to ``/serve``, and compares the JSON answer
    with :meth:`~ServableModule.configure_response`. The answer is kept in ``resp`` (``status_code``, ``text``,
    ``json()``); ``resolved`` becomes ``True`` once an answer came back and ``successful`` tells whether the check
passed (``None`` before it ran). Training then goes on.

    The server runs in a background thread of the training process while training waits for the answer; the
    module is put in eval mode for the check and every submodule's train/eval mode is restored afterwards.

    Args:
        optimization: how the model is converted before serving. Only ``None`` (serve the module as it is)
            is supported; ``"trace"`` and ``"script"`` raise ``NotImplementedError``, as in Lightning.
        server: ``"fastapi"`` (default) serves with FastAPI and uvicorn when both are installed and otherwise
            falls back to the standard library's ``http.server``, with the same ``/ping`` and ``/serve`` routes;
            ``"stdlib"`` always uses ``http.server``. torchbolt does not require FastAPI.
        host: the address the server binds to.
        port: the port the server binds to; ``0`` picks a free one.
        timeout: seconds to wait for the server to start and then for the answer.
        exit_on_failure: when the check fails (an error answer or an answer other than
            ``configure_response()``), raise ``MisconfigurationException`` (``True``) or only warn (``False``).

    Raises:
        TypeError: at train start, when the module is not a ``ServableModule``.
        RuntimeError: at train start, with the FSDP or DeepSpeed strategies (their sharded parameters cannot
            be served from one process), or when the server does not start within ``timeout``.
        ValueError: when ``configure_payload()`` has no ``"body"`` entry.
    """

    def __init__(
        self,
        optimization: Literal["trace", "script", "onnx", "tensorrt"] | None = None,
        server: Literal["fastapi", "stdlib", "ml_server", "torchserve", "sagemaker"] = "fastapi",
        host: str = "127.0.0.1",
        port: int = 8080,
        timeout: int = 20,
        exit_on_failure: bool = True,
    ) -> None:
        super().__init__()
        if optimization is not None:
            raise NotImplementedError(
                f"`ServableModuleValidator(optimization={optimization!r})` is not supported; pass `optimization=None`."
            )
        if server not in _SERVERS:
            raise NotImplementedError(
                f"`ServableModuleValidator(server={server!r})` is not supported; pass one of {_SERVERS}."
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"`ServableModuleValidator(port={port!r})` must be an int in [0, 65535].")
        if timeout <= 0:
            raise ValueError(f"`ServableModuleValidator(timeout={timeout!r})` must be positive.")
        self.optimization = optimization
        self.server = server
        self.host = host
        self.port = port
        self.timeout = timeout
        self.exit_on_failure = exit_on_failure
        self.resp: _ServeResponse | None = None
        self.resolved: bool = False
        self._failure: str | None = None

    @property
    def successful(self) -> bool | None:
        """Whether the last check passed: the server answered 200 with the expected JSON (``None`` before)."""
        if self.resp is None:
            return None
        return self.resp.status_code == 200 and self._failure is None

    def state_dict(self) -> dict[str, Any]:
        """The verdict and settings, saved in checkpoints: ``successful``, ``optimization`` and ``server``."""
        return {"successful": self.successful, "optimization": self.optimization, "server": self.server}

    @rank_zero_only
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._refuse_unsupported(trainer, pl_module)
        assert isinstance(pl_module, ServableModule)
        payload = pl_module.configure_payload()
        if not isinstance(payload, dict) or "body" not in payload:
            raise ValueError(f'`configure_payload()` must return a dict with a "body" entry, got {payload!r}.')
        self.resp, self._failure = None, None
        self.resolved = False
        with _eval_mode(pl_module):
            self.resp = self._serve_once(pl_module, payload)
        self.resolved = True
        self._judge(pl_module)

    def _refuse_unsupported(self, trainer: Trainer, pl_module: LightningModule) -> None:
        strategy = type(getattr(trainer, "strategy", None))
        if any(cls.__name__ in ("FSDPStrategy", "DeepSpeedStrategy") for cls in strategy.__mro__):
            raise RuntimeError(
                f"`ServableModuleValidator` does not support the {strategy.__qualname__}: its sharded parameters"
                " cannot be served from one process. Remove the callback or use another strategy."
            )
        if not isinstance(pl_module, ServableModule):
            raise TypeError(
                f"`ServableModuleValidator` needs a module that subclasses `torchbolt.serve.ServableModule`;"
                f" {type(pl_module).__qualname__} does not. Add `ServableModule` to its base classes."
            )
        for name in ("configure_payload", "configure_serialization", "serve_step"):
            if not is_overridden(name, pl_module, ServableModule):
                raise NotImplementedError(f"{type(pl_module).__qualname__} must implement `{name}`.")

    def _backend(self) -> str:
        if self.server == "fastapi" and _fastapi_available():
            return "fastapi"
        return "stdlib"

    def _serve_once(self, module: ServableModule, payload: dict[str, Any]) -> _ServeResponse:
        deserializers, serializers = module.configure_serialization()
        sock = socket.create_server((self.host, self.port))  # bound before the thread starts: no start-up race
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        server = _Server(self._backend(), sock, lambda p: _answer(module, deserializers, serializers, p))
        server.start()
        try:
            self._wait_until_up(url)
            return _post(f"{url}/serve", payload, self.timeout)
        finally:
            server.stop()

    def _wait_until_up(self, url: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ping", timeout=1) as answer:
                if answer.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"The serving check's server at {url} did not start within {self.timeout}s.")
            time.sleep(0.05)

    def _judge(self, module: ServableModule) -> None:
        assert self.resp is not None
        if self.resp.status_code != 200:
            self._failure = f"the server answered {self.resp.status_code}: {self.resp.text}"
        elif is_overridden("configure_response", module, ServableModule):
            expected = module.configure_response()
            got = self.resp.json()
            if got != expected:
                self._failure = f"the answer {got!r} differs from `configure_response()` = {expected!r}"
        if self._failure is None:
            _logger.info(f"Your model is servable; it answered {self.resp.json()!r}.")
            return
        message = f"The model is not servable: {self._failure}."
        if self.exit_on_failure:
            raise MisconfigurationException(message)
        warnings.warn(message, UserWarning, stacklevel=2)


def _post(url: str, payload: dict[str, Any], timeout: float) -> _ServeResponse:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return _ServeResponse(answer.status, answer.read().decode(), dict(answer.headers.items()))
    except urllib.error.HTTPError as err:  # 4xx/5xx: keep the answer, the check reports it
        return _ServeResponse(err.code, err.read().decode(), dict(err.headers.items()))


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
