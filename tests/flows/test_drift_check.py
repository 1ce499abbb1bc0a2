"""The drift-check flow on a real Prefect server and MLflow registry: a window of sampled
requests like the training set is no drift; a shifted one is, names the shifted features,
keeps Evidently's report as artifacts and announces itself with the event that retrains."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from benchmarks.synthetic import generate_mixed_panel, mixed_spec, shift_mixed_panel
from mlops.config import ModelSettings, Settings, TaskType
from mlops.data import storage
from mlops.monitoring.check import DriftCheckParams
from mlops.monitoring.policy import DriftPolicy
from mlops.pipeline.stages import PipelineParams, run_stages
from mlops.registry.client import fetch_verified
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.sampling import RequestSampler, requests_folder

pytestmark = pytest.mark.slow
MODEL = "alpha.mixed"
STREAM_ENTITIES = 125  # 1,000 rows a stream: the default policy's minimum


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A champion of the mixed dataset registered by the plain-Python pipeline."""
    folder = tmp_path_factory.mktemp("drift")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("MLOPS_DATA_DIR", str(folder / "data"))
    path = folder / "mixed.parquet"
    generate_mixed_panel(n_entities=150, seed=1).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.classification)
    run_stages(PipelineParams(spec=spec, team="alpha", deploy=False,
                              model=ModelSettings(epochs=3, hidden=[16])), Settings())
    data, fetched = fetch_verified(Settings().tracking, f"models:/{MODEL}@champion")
    predictor = OnnxPredictor.from_bytes(data, MODEL, fetched.sha256, MODEL, fetched.version)
    yield spec, predictor
    monkey.undo()


def serve(predictor: OnnxPredictor, frame) -> None:
    """What the service records of these rows (every row, as at rate 1)."""
    storage.remove(requests_folder(str(Settings().data_dir), MODEL))
    sampler = RequestSampler(str(Settings().data_dir), rate=1.0)
    matrix = frame[predictor.feature_names].astype(object).to_numpy()
    matrix = np.where(frame[predictor.feature_names].isna().to_numpy(), None, matrix)
    for chunk in np.array_split(matrix, 20):
        sampler.offer(predictor, chunk, predictor.predict(chunk))
    sampler.flush()


def artifacts(key: str) -> list:
    """The artifacts of that key, the newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC)

    return asyncio.run(read())


def test_requests_like_the_training_set_are_no_drift(prefect_server: None, trained) -> None:
    from flows.drift_check import drift_check

    spec, predictor = trained
    serve(predictor, generate_mixed_panel(n_entities=STREAM_ENTITIES, seed=7))
    check = drift_check(DriftCheckParams(spec=spec, team="alpha"))
    assert not check.result.drifted, check.result
    assert check.result.current_rows == STREAM_ENTITIES * 8 and check.version == "1"
    assert check.report and Path(check.report).read_text()[:2000].lower().count("<html")
    assert "No drift" in artifacts("drift-check")[0].data


def test_a_shifted_stream_is_drift_with_its_report(prefect_server: None, trained) -> None:
    from flows.drift_check import drift_check
    from tasks.drift import announce

    spec, predictor = trained
    serve(predictor, shift_mixed_panel(generate_mixed_panel(n_entities=STREAM_ENTITIES,
                                                            seed=8)))
    check = drift_check(DriftCheckParams(spec=spec, team="alpha"))
    result = check.result
    assert result.drifted, result
    assert {"f0", "hours", "continent"} <= set(result.drifted_features())
    assert not {"f1", "occupation"} & set(result.drifted_features())
    table = artifacts("drift-check")[0].data
    assert "**Drift:" in table and "| f0 |" in table
    assert artifacts("drift-report")[0].data == (
        f"[Evidently drift report](file://{check.report})")
    # Drift is announced, even when the team's retraining deployment does not exist.
    calm = check.model_copy(update={"result": result.model_copy(update={"drifted": False})})

    @flow
    def announced() -> tuple[str | None, str | None]:
        return (announce(check, DriftPolicy(retrain="training-pipeline/nowhere")),
                announce(calm, DriftPolicy()))

    event, none = announced()
    assert event is not None and none is None


def test_too_few_sampled_rows_give_no_verdict(prefect_server: None, trained) -> None:
    from flows.drift_check import drift_check

    spec, predictor = trained
    serve(predictor, shift_mixed_panel(generate_mixed_panel(n_entities=5, seed=9)))
    check = drift_check(DriftCheckParams(spec=spec, team="alpha"))
    assert not check.result.drifted and check.report is None
    assert "40 current rows" in check.result.reason
