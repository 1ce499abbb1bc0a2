"""The run summary as a Prefect markdown artifact."""

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.pipeline.summary import PipelineSummary, render_markdown


@task(name="report-run", cache_policy=NONE)
def report(summary: PipelineSummary) -> PipelineSummary:
    """Publish the run summary as a markdown artifact keyed by dataset."""
    key = f"training-{summary.dataset.replace('_', '-')}"
    create_markdown_artifact(render_markdown(summary), key=key,
                             description=f"Training pipeline run on {summary.dataset}")
    return summary
