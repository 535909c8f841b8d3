"""The one way Slipway reaches the Kubernetes API, and the one way its errors become messages.

Credentials, as kubectl and client-go choose them: an explicit kubeconfig or context wins; else, inside a pod,
the service account; else the default kubeconfig (`$KUBECONFIG` or `~/.kube/config`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from slipway.core.errors import ClusterError, KubeconfigError, NotFoundError

HINTS = {
    401: "check the kubeconfig context and its credentials",
    403: "check RBAC: the service account or user lacks this verb on this resource",
    409: "it changed underneath us; re-run to act on its current state",
}


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A CustomObjectsApi from the credentials described in the module docstring; KubeconfigError if none."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if not (kubeconfig or context) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            return client.CustomObjectsApi(client.ApiClient())
        except ConfigException:
            pass  # a pod without a mounted service account token: fall through to a kubeconfig
    for path in _kubeconfig_files(kubeconfig):
        check_kubeconfig(path)
    try:
        return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig, context=context))
    except Exception as err:  # the client raises anything from ConfigException to TypeError on a bad file
        where = f"kubeconfig {kubeconfig or '(default: $KUBECONFIG or ~/.kube/config)'}"
        where += f", context {context}" if context else ""
        outside = "" if kubeconfig else " (and not running in a pod)"
        raise KubeconfigError(
            f"no usable Kubernetes credentials from {where}{outside}: {_one_line(err)}; "
            "pass --kubeconfig/--context or set $KUBECONFIG"
        ) from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _kubeconfig_files(kubeconfig: str | None) -> list[str]:
    """The files the client will read: the one given (which must exist), else those of $KUBECONFIG (a list,
    as kubectl reads it) or ~/.kube/config that exist."""
    if kubeconfig:
        return [kubeconfig]
    listed = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return [path for path in listed.split(os.pathsep) if path and os.path.isfile(path)]


def check_kubeconfig(path: str) -> None:
    """Read a kubeconfig's outline first, so that a broken file is one message naming what is wrong (the client
    raises a YAML traceback, or a TypeError about list indices, from deep inside its loader)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise KubeconfigError(f"kubeconfig {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise KubeconfigError(f"kubeconfig {path}: cannot read it: {_one_line(err)}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or _one_line(err)
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML{where}: {problem}") from None
    if document is None:
        raise KubeconfigError(f"kubeconfig {path} is empty")
    if not isinstance(document, dict):
        raise KubeconfigError(
            f"kubeconfig {path} is not a kubeconfig: expected a mapping with clusters, contexts and users, "
            f"got a {type(document).__name__}"
        )
    for key in ("clusters", "contexts", "users"):
        entries = document.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
            raise KubeconfigError(
                f"kubeconfig {path}: `{key}` must be a list of entries with a `name`, got {_short(entries)}"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
