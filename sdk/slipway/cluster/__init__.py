"""Cluster: the Kubernetes API (one client factory, one error mapping), KServe objects and canary rollout,
Prometheus canary analysis, Kubeflow Trainer jobs, object storage and the Kubeflow Pipelines client.

A domain package: imports slipway.core and sibling domain packages; never steps, pipelines or cli.
"""
