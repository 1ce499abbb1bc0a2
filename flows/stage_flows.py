"""One small flow per stage deployment of the distributed pipeline.

Each runs where its deployment puts it (train on the `gpu` pool, the others on `cpu`),
reads its inputs from the handover store (the S3 bucket on the production profile, so any
worker can run any stage), calls the stage's task(s) and writes its own result back to the
store: results travel as files (paths, URIs, hashes), never in memory.
Each returns only the path of the result it wrote. A stage's flow (and its deployment's
flow) is named ``<stage>-stage``; the validate stage's flow runs the features stage too.
"""

from prefect import flow

from flows.worker_bound import end_with_worker
from mlops.config import Settings
from mlops.pipeline.handover import HandoverRef, handover_root, read_result, write_result
from mlops.pipeline.stages import PipelineParams, Stage
from tasks.deploy import deploy
from tasks.export import export
from tasks.features import build_features
from tasks.registry import register
from tasks.training import train
from tasks.validation import validate_data


def stage_flow_name(stage: Stage) -> str:
    return f"{stage}-stage"


@flow(name=stage_flow_name(Stage.VALIDATE), validate_parameters=True)
def validate_stage_flow(params: PipelineParams, handover: HandoverRef) -> str:
    """The data stages: validate the dataset, then build and materialise its features."""
    end_with_worker()
    settings = Settings()
    data = validate_data(params.spec, settings, params.team)
    write_result(handover_root(settings), handover, Stage.VALIDATE, data)
    features = build_features(data, params.spec, settings, params.team)
    return str(write_result(handover_root(settings), handover, Stage.FEATURES, features))


@flow(name=stage_flow_name(Stage.TRAIN), validate_parameters=True)
def train_stage_flow(params: PipelineParams, handover: HandoverRef) -> str:
    """Train on the point-in-time training set the features stage handed over."""
    end_with_worker()
    settings = Settings()
    features = read_result(handover_root(settings), handover, Stage.FEATURES)
    trained = train(features.training_path, params.spec, params.model, settings,
                    params.team)
    return str(write_result(handover_root(settings), handover, Stage.TRAIN, trained))


@flow(name=stage_flow_name(Stage.EXPORT), validate_parameters=True)
def export_stage_flow(params: PipelineParams, handover: HandoverRef) -> str:
    """Export the trained model to ONNX with its parity check."""
    end_with_worker()
    settings = Settings()
    trained = read_result(handover_root(settings), handover, Stage.TRAIN)
    exported = export(trained.model_path, trained.test_path, params.spec, settings)
    return str(write_result(handover_root(settings), handover, Stage.EXPORT, exported))


@flow(name=stage_flow_name(Stage.REGISTER), validate_parameters=True)
def register_stage_flow(params: PipelineParams, handover: HandoverRef) -> str:
    """Register the exported model with the lineage of every earlier stage."""
    end_with_worker()
    settings = Settings()
    data, features, trained, exported = (read_result(handover_root(settings), handover, stage)
                                         for stage in (Stage.VALIDATE, Stage.FEATURES,
                                                       Stage.TRAIN, Stage.EXPORT))
    registered = register(params, data, features, trained, exported, settings,
                          handover.run_id)
    return str(write_result(handover_root(settings), handover, Stage.REGISTER, registered))


@flow(name=stage_flow_name(Stage.DEPLOY), validate_parameters=True)
def deploy_stage_flow(params: PipelineParams, handover: HandoverRef) -> str:
    """(Re)start the inference service on the registry's champion."""
    end_with_worker()
    settings = Settings()
    service = deploy(params.spec, settings, params.team)
    return str(write_result(handover_root(settings), handover, Stage.DEPLOY, service))
