"""The service with its gRPC endpoint, as ``python -m mlops.serving --grpc-port`` runs it:
uvicorn in a thread, the gRPC server attached to the app's lifespan on uvicorn's loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI
from raw_http import in_thread
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.grpc import attach_grpc
from mlops.serving.grpc import grpc_predict_v2_pb2 as pb
from mlops.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from mlops.serving.model_manager import ModelManager
from mlops.serving.tls import TlsFiles

SERVICE_PATH = "/inference.GRPCInferenceService"


@dataclass
class Served:
    """A running service: its app, REST base URL and gRPC target (host:port)."""

    app: FastAPI
    url: str
    target: str

    @property
    def manager(self) -> ModelManager:
        return self.app.state.manager


@contextmanager
def grpc_serving(onnx_model: tuple[Path, str], tls: TlsFiles | None = None,
                 manager: ModelManager | None = None, challenger: ModelManager | None = None,
                 **settings: Any) -> Iterator[Served]:
    """REST and gRPC on free ports, on one uvicorn event loop in a thread (``manager``:
    one of the test's, else one serving ``onnx_model`` as version 3)."""
    config = ServingConfig(admin_token=ADMIN_TOKEN, access_log=False, **settings)
    app = create_app(manager or serving_manager(*onnx_model), None, config,
                     challenger=challenger)
    attach_grpc(app, "127.0.0.1", 0, tls, grace_s=1.0)
    with in_thread(app, config) as port:
        yield Served(app, f"http://127.0.0.1:{port}", f"127.0.0.1:{app.state.grpc.port}")


@contextmanager
def stub(target: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """A plain gRPC stub of the generated code: sends what tritonclient would refuse."""
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(*inputs: pb.ModelInferRequest.InferInputTensor, raw: list[bytes] | None = None,
                  model: str = "synthetic", version: str = "",
                  outputs: tuple[str, ...] = ()) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, inputs=inputs,
                                   raw_input_contents=raw or [])
    for name in outputs:
        request.outputs.add(name=name)
    return request


def tensor(name: str, datatype: str, shape: list[int], **contents: list[Any]
           ) -> pb.ModelInferRequest.InferInputTensor:
    """An input tensor; ``contents`` are InferTensorContents fields (fp32_contents=...)."""
    message = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if contents:
        message.contents.CopyFrom(pb.InferTensorContents(**contents))
    return message
