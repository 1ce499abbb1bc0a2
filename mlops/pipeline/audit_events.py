"""The pipeline's governance facts, appended to the audit trail as they happen: a dataset
validated (its content hash and the outcome), a model version registered and the aliases it
moved, a service deployed.

Each is appended once the fact holds; when the audit store cannot take it, the stage fails
with ``AuditUnavailable`` (failing closed: nothing after it runs, and the message says what
had already happened).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops.config import DatasetSpec, Settings
from mlops.governance.audit.log import open_audit_log
from mlops.governance.audit.records import Action, AuditUnavailable

if TYPE_CHECKING:
    from mlops.registry import RegistrationResult
    from mlops.serving.deploy import ServiceInfo

ACTOR = "pipeline"  # the platform's pipeline code, acting for the run's team


def record(settings: Settings, action: Action, team: str | None, subject: str,
           details: dict[str, Any], done: str, actor: str = ACTOR) -> None:
    """Append one record; ``done`` says what already happened, for the error if the store
    cannot take it."""
    try:
        with open_audit_log(settings) as log:
            log.append(action, actor, team, subject, details)
    except AuditUnavailable as exc:
        raise AuditUnavailable(f"{done}, but the audit trail cannot record it, so the run "
                               f"stops here: {exc}") from None


def dataset_validated(settings: Settings, spec: DatasetSpec, team: str | None,
                      dataset_hash: str | None, passed: bool, detail: str = "") -> None:
    record(settings, Action.DATASET_VALIDATED, team, spec.name,
           {"location": spec.path, "dataset_hash": dataset_hash,
            "outcome": "passed" if passed else "failed", "detail": detail[:2000]},
           f"dataset {spec.name} was validated ({'passed' if passed else 'failed'})")


def model_registered(settings: Settings, team: str, registered: RegistrationResult) -> None:
    """The new version, then each alias it moved (challenger always; champion when it won)."""
    subject = f"{registered.name} v{registered.version}"
    done = f"{subject} was registered"
    record(settings, Action.MODEL_REGISTERED, team, subject,
           {"run_id": registered.run_id, "sha256": registered.sha256,
            registered.primary_metric: registered.metric_value}, done)
    for alias in registered.aliases:
        previous = registered.previous_champion if alias == "champion" else None
        record(settings, Action.ALIAS_MOVED, team, f"{registered.name}@{alias}",
               {"version": registered.version, "previous": previous}, done)


def approval_answered(settings: Settings, team: str, registered: RegistrationResult,
                      approver: str | None, approve: bool, comment: str) -> None:
    """An approver's answer, or (no approver) the timeout that stands for a rejection."""
    subject = f"{registered.name} v{registered.version}"
    details = ({"comment": comment} if approver
               else {"reason": "no answer within the team's approval timeout"})
    record(settings, Action.APPROVAL_GRANTED if approve else Action.APPROVAL_REJECTED, team,
           subject, details, f"{subject} was {'approved' if approve else 'not approved'}",
           actor=approver or ACTOR)


def champion_moved(settings: Settings, team: str, registered: RegistrationResult,
                   previous: str | None, approver: str) -> None:
    record(settings, Action.ALIAS_MOVED, team, f"{registered.name}@champion",
           {"version": registered.version, "previous": previous, "approved_by": approver},
           f"{registered.name} v{registered.version} became champion", actor=approver)


def service_deployed(settings: Settings, team: str | None, model: str,
                     service: ServiceInfo) -> None:
    record(settings, Action.SERVICE_DEPLOYED, team, model,
           {"version": service.model_version, "url": service.url, "how": service.action},
           f"{model} v{service.model_version} is served at {service.url}")
