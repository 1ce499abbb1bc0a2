"""On what the platform runs: work pools, queues and limits as code, and their provisioning."""
