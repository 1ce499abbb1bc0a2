"""Render a Kubernetes work pool's base job template into the Job a worker would submit.

The job configuration is filled with Prefect's own templating (`apply_values`), with the
variables' defaults merged under the given job variables, as
`BaseJobConfiguration.from_template_and_values` does. The few steps that the Kubernetes
worker (prefect-kubernetes, not installed here) then applies for a flow run are repeated
so that the result is the Job manifest it would create: env as a list, the command as
args, the default Prefect image, a generateName from the flow run's name and the
flow-run label on the Job and its pod.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
from prefect.utilities.dockerutils import get_prefect_image_name
from prefect.utilities.templating import apply_values


class JobVariablesError(ValueError):
    """Job variables that the work pool's variables schema does not accept."""


def load_template(template_path: str | Path) -> dict[str, Any]:
    """The base job template as Prefect stores it: job_configuration and variables."""
    return json.loads(Path(template_path).read_text())


def check_job_variables(variables_schema: dict[str, Any], values: dict[str, Any]) -> None:
    """Refuse unknown job variables and values failing the schema, naming the variable.

    Prefect's server checks values against the schema but lets unknown names through,
    where they are silently ignored; a typo such as `gpu_cuont` would then run on defaults.
    """
    known = variables_schema.get("properties", {})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise JobVariablesError(f"unknown job variable(s): {', '.join(unknown)}")
    validator = jsonschema.validators.validator_for(variables_schema)(variables_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(values))
    if error is not None:
        name = error.absolute_path[0] if error.absolute_path else "(all)"
        raise JobVariablesError(f"job variable {name!r}: {error.message}")


def variable_defaults(variables_schema: dict[str, Any]) -> dict[str, Any]:
    """Defaults of the variables that have a non-null one, as the worker takes them."""
    return {
        name: spec["default"]
        for name, spec in variables_schema.get("properties", {}).items()
        if spec.get("default") is not None
    }


def render_job(
    template_path: str | Path, job_variables: dict[str, Any], flow_run_name: str = "demo"
) -> dict[str, Any]:
    """The Kubernetes Job manifest for a flow run with these job variables."""
    template = load_template(template_path)
    check_job_variables(template["variables"], job_variables)
    values = {**variable_defaults(template["variables"]), **job_variables}
    values.setdefault("name", slugify_name(flow_run_name))
    configuration = apply_values(template["job_configuration"], values)
    return complete_manifest(configuration, flow_run_name)


def complete_manifest(configuration: dict[str, Any], flow_run_name: str) -> dict[str, Any]:
    """The rendered job_manifest with the Kubernetes worker's per-run additions."""
    manifest = configuration["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = configuration.get("env") or {}
    container["env"] = [{"name": key, "value": value} for key, value in env.items()]
    container["args"] = shlex.split(configuration.get("command") or "prefect flow-run execute")
    container.setdefault("image", get_prefect_image_name())
    run_label = {"prefect.io/flow-run-name": slugify_name(flow_run_name)}
    labels = {**configuration.get("labels", {}), **run_label}
    manifest["metadata"]["labels"] = labels
    manifest["spec"]["template"].setdefault("metadata", {})["labels"] = dict(labels)
    return manifest


def slugify_name(name: str) -> str:
    """A DNS-1123 label prefix for generateName (lower case, digits and '-')."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50].rstrip("-")
    return slug or "prefect-job"
