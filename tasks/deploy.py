from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.stages import deploy_stage


@task(name="deploy-service", cache_policy=NONE)
def deploy(spec: DatasetSpec, settings: Settings):  # noqa: ANN201
    """Roll the running ONNX Runtime service to the champion, or start one; wait until ready."""
    result = deploy_stage(spec, settings)
    get_run_logger().info("serving %s v%s at %s (%s)", spec.name, result.model_version,
                            result.url, result.action)
    return result
