"""The training pipeline: validate -> features -> train -> export -> register -> deploy."""

from prefect import flow

from mlops.config import Settings
from mlops.stages import PipelineParams
from mlops.summary import PipelineSummary, build_summary
from tasks.deploy import deploy
from tasks.export import export
from tasks.features import build_features
from tasks.registry import register
from tasks.report import report
from tasks.training import train
from tasks.validation import validate_data


@flow(name="training-pipeline", validate_parameters=True)
def training_pipeline(params: PipelineParams) -> PipelineSummary:
    """Take a dataset to a served model; each stage hands over paths and hashes."""
    settings = Settings()
    spec = params.spec
    data = validate_data(spec, settings)
    features = build_features(data, spec, settings)
    trained = train(features.training_path, spec, params.model, settings)
    exported = export(trained.model_path, trained.test_path, spec, settings)
    registered = register(params, data, features, trained, exported, settings)
    service = deploy(spec, settings) if params.deploy else None
    return report(build_summary(params, data, features, trained, exported, registered,
                                service))
