"""On what the platform runs: the teams file and its provisioning, the platform's services
(``make up``), the fair-share controller's I/O on Prefect, the Prefect REST helpers they
share, deployments, Kubernetes job templates and manifests, and the serving image."""
