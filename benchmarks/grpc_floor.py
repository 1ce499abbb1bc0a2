"""The bare gRPC floor of the serving benchmark: grpc.aio answering ModelInfer with a
constant, the request not even parsed.

The gRPC twin of ``benchmarks.asgi_floor``: the same server stack as the service's gRPC
port (grpcio's asyncio server on uvloop, the protocol's generated stubs) with no work
behind it, so what it reaches is the ceiling of any Python service on grpcio. The bare
ASGI floor answers REST readiness on ``--port`` (the bench waits on it) on the same loop.

``python -m benchmarks.grpc_floor --port 8099 --grpc-port 8100``
"""

from __future__ import annotations

import argparse

import grpc
import uvicorn

from benchmarks.asgi_floor import app
from mlops.serving.grpc import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
REPLY = pb.ModelInferResponse(model_name="floor", model_version="1", outputs=[
    pb.ModelInferResponse.InferOutputTensor(name="prediction", datatype="FP32", shape=[1])],
    raw_output_contents=[b"\x00\x00\x00?"]).SerializeToString()
READY = {"ServerLive": pb.ServerLiveResponse(live=True),
         "ServerReady": pb.ServerReadyResponse(ready=True),
         "ModelReady": pb.ModelReadyResponse(ready=True)}


def _constant(reply: bytes) -> grpc.RpcMethodHandler:
    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    # Bytes in, bytes out: no message is parsed or built per call.
    return grpc.unary_unary_rpc_method_handler(answer)


def handler() -> grpc.GenericRpcHandler:
    methods = {"ModelInfer": _constant(REPLY),
               **{name: _constant(reply.SerializeToString()) for name, reply in READY.items()},
               "ModelMetadata": _constant(pb.ModelMetadataResponse(
                   name="floor", versions=["1"], platform="floor").SerializeToString())}
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def serve(host: str, port: int, grpc_port: int) -> None:
    server = grpc.aio.server(handlers=[handler()])
    server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.grpc_port))


if __name__ == "__main__":
    main()
