"""The Open Inference Protocol (KServe v2) over gRPC, beside the REST app, on its loop.

``grpc_predict_v2.proto`` is the protocol's service (package ``inference``, service
``GRPCInferenceService``: the names standard clients such as tritonclient.grpc call);
``grpc_predict_v2_pb2*.py`` are generated from it, never edited by hand. Regenerate them
from the repository root with

    .venv/bin/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \\
        --grpc_python_out=. mlops/serving/grpc/grpc_predict_v2.proto
    sed -i 's/_descriptor_pool.Default()/_descriptor_pool.DescriptorPool()/' \\
        mlops/serving/grpc/grpc_predict_v2_pb2.py

The second step puts the messages in a descriptor pool of their own: their names
(``inference.ModelInferRequest``...) are the protocol's, so in protobuf's default pool
they would clash with any client's copy of the protocol loaded in the same process
(tritonclient.grpc's, in the tests), and the second import would fail.

``contents`` decodes a request's tensors and encodes the outputs, ``service`` answers the
six calls, ``endpoint`` binds and starts the server (``start_grpc``, ``attach_grpc``).

May import grpc, protobuf and ``mlops.serving``'s own modules (the app's parts it shares:
manager, runner, metrics, tensor checks, errors). Nothing imports this package but the
service's entry point.
"""

from mlops.serving.grpc.endpoint import GrpcEndpoint, attach_grpc, start_grpc
from mlops.serving.grpc.service import ServiceParts

__all__ = ["GrpcEndpoint", "ServiceParts", "attach_grpc", "start_grpc"]
