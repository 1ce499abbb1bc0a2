from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.stages import PipelineParams, ValidatedData, register_stage
from tasks.policy import IO_RETRIES


@task(name="register-model", cache_policy=NONE, **IO_RETRIES)
def register(params: PipelineParams, data: ValidatedData, features, trained,  # noqa: ANN001,ANN201
             exported, settings: Settings):
    """MLflow run with lineage, model version, challenger/champion aliases."""
    result = register_stage(params, data, features, trained, exported, settings)
    get_run_logger().info("%s v%s aliases %s", result.name, result.version, result.aliases)
    return result
