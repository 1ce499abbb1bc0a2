"""The features stage on the production profile: Feast's SQL registry in the machine's
PostgreSQL and its online store in the machine's Redis (database 15, emptied around the
test), with the same code path as the local profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg2
import pytest
import redis

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.features.online import online_lookup
from mlops.features.training_set import prepare_features
from tests.e2e.production_services import RedisServer, postgres_tenant, production_profile

pytestmark = pytest.mark.slow
REDIS_DB = 15


def test_features_stage_on_a_postgresql_registry_and_a_redis_online_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    online = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    with postgres_tenant() as tenant, production_profile(
            monkeypatch, tenant, tmp_path, f"redis://127.0.0.1:6379/{REDIS_DB}"):
        online.flushdb()
        try:
            _check_the_stage(tmp_path, tenant, online)
        finally:
            online.flushdb()


def _check_the_stage(data_dir: Path, tenant: dict[str, str], online: redis.Redis) -> None:
    frame = generate_panel(n_entities=30, n_periods=4, seed=3)
    path = data_dir / "panel.parquet"
    frame.to_parquet(path, index=False)
    spec = synthetic_spec(str(path), name="prod_panel")
    result = prepare_features(frame, spec, data_dir)
    assert result.source_path == "s3://mlops/features/prod_panel/source.parquet"
    repo = Path(result.repo_path)
    assert not (repo / "registry.db").exists() and not (repo / "online.db").exists()
    rendered = (repo / "feature_store.yaml").read_text()
    assert "${MLOPS_PG_PASSWORD}" in rendered and tenant["MLOPS_PG_PASSWORD"] not in rendered
    with psycopg2.connect(host="127.0.0.1", user=tenant["MLOPS_PG_USER"],
                          password=tenant["MLOPS_PG_PASSWORD"],
                          dbname=f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_feast") as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT feature_service_name FROM feature_services "
                           "WHERE project_id = %s", ("prod_panel",))
            assert cursor.fetchall() == [("prod_panel_v1",)]
    assert online.dbsize() >= 30  # one key per entity, at least
    known = sorted(frame[spec.entity].unique().tolist())
    ids = [known[5], known[0], known[17]]
    latest = frame.sort_values(spec.timestamp).groupby(spec.entity).last()
    values = online_lookup(spec, data_dir).matrix(ids)
    np.testing.assert_allclose(values, latest.loc[ids, spec.features].to_numpy("float64"),
                               rtol=1e-6)


def test_a_redis_that_requires_a_password_gets_it_from_the_environment_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.production import ServiceUnreachable, check_redis
    from mlops.config import Settings
    from mlops.features.store import FeatureError, redis_connection_string

    secret = "s3cret-redis-auth"
    server = RedisServer(tmp_path / "redis", password=secret)
    (tmp_path / "redis").mkdir()
    server.start()
    try:
        with postgres_tenant() as tenant, production_profile(
                monkeypatch, tenant, tmp_path, f"redis://127.0.0.1:{server.port}/0"):
            with pytest.raises(ServiceUnreachable, match=f"127.0.0.1:{server.port}/0"):
                check_redis(Settings())  # no password set: AUTH refused, named
            monkeypatch.setenv("MLOPS_REDIS_PASSWORD", secret)
            assert "answers" in check_redis(Settings())
            frame = generate_panel(n_entities=10, n_periods=3, seed=4)
            spec = synthetic_spec(str(tmp_path / "unused.parquet"), name="auth_panel")
            result = prepare_features(frame, spec, tmp_path)
            rendered = (Path(result.repo_path) / "feature_store.yaml").read_text()
            assert "password=${MLOPS_REDIS_PASSWORD}" in rendered and secret not in rendered
            latest = frame.sort_values(spec.timestamp).groupby(spec.entity).last()
            entity = int(latest.index[3])
            values = online_lookup(spec, tmp_path).matrix([entity])
            expected = latest.loc[entity, spec.features].to_numpy("float64")
            np.testing.assert_allclose(values[0], expected, rtol=1e-6)
    finally:
        server.stop()
    with pytest.raises(FeatureError, match="set MLOPS_REDIS_PASSWORD instead"):
        redis_connection_string(f"redis://:{secret}@127.0.0.1:6379/0")
