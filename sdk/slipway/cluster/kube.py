"""The one way Slipway reaches the Kubernetes API, and the one way its errors become messages.

Credentials, as kubectl and client-go choose them: an explicit kubeconfig or context wins; else, inside a pod,
the service account; else the default kubeconfig (`$KUBECONFIG` or `~/.kube/config`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from slipway.core.errors import ClusterError, NotFoundError

HINTS = {
    401: "check the kubeconfig context and its credentials",
    403: "check RBAC: the service account or user lacks this verb on this resource",
    409: "it changed underneath us; re-run to act on its current state",
}


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A CustomObjectsApi from the credentials described in the module docstring; ClusterError if none."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if not (kubeconfig or context) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            return client.CustomObjectsApi(client.ApiClient())
        except ConfigException:
            pass  # a pod without a mounted service account token: fall through to a kubeconfig
    try:
        return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig, context=context))
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as err:
        where = f"kubeconfig {kubeconfig or '(default)'}" + (f" context {context}" if context else "")
        raise ClusterError(
            f"no usable Kubernetes credentials: cannot load {where} ({err}) and not running in a pod; "
            "pass --kubeconfig/--context or set $KUBECONFIG"
        ) from None


def error_message(err: Any) -> str:
    """The server's own message from an API exception body (JSON with `message`, or text), else the error."""
    body = getattr(err, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and parsed.get("message"):
                return str(parsed["message"])
        except ValueError:
            pass
        return str(body)[:500]
    return str(getattr(err, "reason", "") or err)


def api_error(action: str, err: Exception) -> ClusterError | NotFoundError:
    """`action failed: HTTP status reason: message (hint)`; a 404 is a NotFoundError."""
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None) or type(err).__name__
    where = f"HTTP {status} {reason}" if status else str(reason)
    text = f"{action} failed: {where}: {error_message(err)}"
    if status in HINTS:
        text += f" ({HINTS[status]})"
    return NotFoundError(text) if status == 404 else ClusterError(text)
