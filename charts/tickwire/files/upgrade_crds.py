"""Bring the cluster's tickwire CRDs up to the chart's copy (run by the chart's pre-upgrade hook).

Helm installs a chart's crds/ folder on first install and never touches it again, so without this
step `helm upgrade` would run a new operator against an old API. For every CRD file given, the
live CRD's spec and labels are replaced with the file's, guarded by a JSON-patch `test` on
resourceVersion: if someone else changed the CRD in between, the API server refuses the patch and
the upgrade stops instead of overwriting their change. A CRD that does not exist is an error
(install the chart, or apply crds/, first): the hook only has get and patch, on these names only.

Usage: python3 upgrade_crds.py CRD.yaml [CRD.yaml ...]
"""
from __future__ import annotations

import json
import sys

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException


def replacement_patch(live: dict, wanted: dict) -> list[dict]:
    """A JSON patch that makes `live` carry `wanted`'s spec and labels, if nothing moved."""
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec", "value": wanted["spec"]},
        {"op": "add", "path": "/metadata/labels", "value": wanted["metadata"].get("labels", {})},
    ]


def upgrade(api: client.ApiextensionsV1Api, wanted: dict) -> str:
    name = wanted["metadata"]["name"]
    try:
        # Raw JSON: the generated models would reshape the schema on the way through.
        live = json.loads(api.read_custom_resource_definition(name, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            raise SystemExit(
                f"CRD {name} is not in the cluster: the chart installs it on first install only. "
                f"Apply it with `kubectl apply --server-side -f crds/`, then run the upgrade again."
            ) from exc
        raise
    api.patch_custom_resource_definition(
        name, replacement_patch(live, wanted), _content_type="application/json-patch+json")
    return f"{name}: replaced spec (was resourceVersion {live['metadata']['resourceVersion']})"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiextensionsV1Api()
    for path in argv:
        with open(path, encoding="utf-8") as handle:
            for wanted in yaml.safe_load_all(handle):
                if wanted and wanted.get("kind") == "CustomResourceDefinition":
                    print(upgrade(api, wanted), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
