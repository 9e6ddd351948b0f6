"""A Kubernetes API emulator realistic enough to run kopf and the official client against.

kmock 0.8's `KubernetesEmulator` stores objects and serves discovery, but it is not an API server
(see ../shared/notes/environment.md, "Kubernetes without a cluster"). This subclass serves every
read and write of a known resource itself and keeps kmock for discovery and for its `objects`
assertion API. What it adds, each one a behaviour kopf or the agent relies on:

- `metadata.resourceVersion` bumps on every write (one counter for the whole server), writes that
  change nothing change nothing (no new version, no event), and a merge patch or PUT carrying a
  `metadata.resourceVersion` that is not the current one fails with 409 Conflict (the optimistic
  concurrency both the operator and the agent use for status.conditions);
- JSON patches whose `test` op fails answer 422, as kopf expects (and as the agent's uid-checked
  status patch needs); a write to the object that changes `metadata.uid` answers 422 (immutable);
- `metadata.uid`, `creationTimestamp`, `generation` (bumped only when something outside metadata
  and status changes) and `namespace` (from the URL) are filled in on create; `generateName` works;
- status-subresource semantics: writes to the object ignore `.status`, writes to `/status`
  change only `.status` (metadata and spec changes in them are dropped, as a real API server's
  status strategy does: an agent's status patch can never touch an annotation);
- admission: `refuse(check)` makes creates fail with 403 Forbidden as a refusing admission plugin
  (PodSecurity, ResourceQuota, a webhook) would;
- graceful Pod deletion: a Pod bound to a node in `unreachable_nodes` stays Terminating
  (deletionTimestamp = now + grace) until deleted with grace 0, since no kubelet there confirms
  it; on every other node the emulated kubelet confirms at once and the Pod goes;
- RBAC for service accounts: a request bearing a token from `service_account_token()` is allowed
  only what the Roles/ClusterRoles bound to that ServiceAccount grant (resourceNames included),
  else 403 Forbidden; the kubeconfig's own token is a cluster admin's;
- watches honour `?resourceVersion=` (replay what happened after it, no duplicate ADDED events,
  410 Gone when it is too old) and `timeoutSeconds`; the snapshot and the subscription are taken
  under one lock so no event is lost between them;
- list and watch honour equality-based `labelSelector` and `metadata.name`/`metadata.namespace`/
  `spec.nodeName` `fieldSelector`s;
- posting a CustomResourceDefinition serves its resource (kmock alone would not);
- PUT replaces an object; deleting an owner deletes the objects that name it in ownerReferences
  (the garbage collector, foreground-less and immediate);
- server-side printing: a get or list that asks for a `meta.k8s.io/v1` Table (as kubectl does)
  gets one built from the CRD's additionalPrinterColumns (printer_columns.py), so
  `kubectl get feedhandlers` shows NODE, QUEUE, CORES, ... as against a real cluster.

Still not an API server: no schema admission (schemas, CEL and defaults are not applied), no
strategic-merge semantics (treated as a merge patch), no RBAC escalation checks, no kubelet or
controllers.

It lives in the product, not in tests/, because `make demo-operator` runs the operator against
it (tests/support/kube_emulator.py re-exports it for the tests). kmock is a test dependency.

The small API the tests and the operator demo use:

    with KubeEmulator.running() as kube:           # an emulator on a free loopback port
        kube.apply_crd(load_yaml("crds/feedhandler.yaml"))  # or declare_feedhandlers()
        api = kube.api_client()                    # kubernetes.client.ApiClient for it
        path = kube.write_kubeconfig(tmp_path)     # for subprocesses (kopf, the agent)
        kube.configuration()                       # kubernetes.client.Configuration
        kube.get("v1/pods", "ns", "name")          # the stored object (a plain dict) or None

    # Served inside a test's network namespace (its loopback), for processes run there:
    with KubeEmulator.running(netns="tw-nd-123") as kube: ...
    client_thread = netns_executor("tw-nd-123")    # the test's own client calls, made from there
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import ctypes
import datetime
import importlib.resources
import json
import os
import pathlib
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml

from .printer_columns import to_table

__all__ = ["FEEDHANDLER_CRD", "KubeEmulator", "enter_netns", "load_yaml", "merge_patch", "netns_executor"]

# The operator ships the CRD (a link to crds/feedhandler.yaml, the single source of truth), so
# this path works from a source tree and from an installed package alike.
FEEDHANDLER_CRD = pathlib.Path(str(importlib.resources.files("tickwire_operator") / "feedhandler.crd.yaml"))

# How many past events per resource a watch can resume from before it gets 410 Gone.
HISTORY_LIMIT = 20000


CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into the named network namespace (`ip netns add NAME`)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into network namespace {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def netns_executor(name: str) -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread living in network namespace `name`: submit client calls to it."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(name,))


class _Gone(Exception):
    pass


def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
         "code": code, "reason": reason, "message": message}, status=code)


def _parse_label_selector(text: str) -> list[tuple[str, str, str | None]]:
    """`a=b,c!=d,e,!f` -> [(key, op, value)]; set-based selectors are refused, not ignored."""
    terms = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if " in " in raw or " notin " in raw or "(" in raw:
            raise ValueError(f"set-based label selector {raw!r} is not supported by the emulator")
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "==" in raw or "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:], "absent", None))
        else:
            terms.append((raw, "exists", None))
    return terms


def _labels_match(labels: Mapping[str, str], terms) -> bool:
    for key, op, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "absent" and key in labels:
            return False
    return True


def _fields_match(obj: Mapping[str, Any], text: str) -> bool:
    for term in filter(None, (t.strip() for t in text.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if (str(node) == value if node is not None else value == "") == negate:
            return False
    return True


class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviours listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()  # without discovery data kopf silently watches nothing
        self._revision = 0
        self._history: dict[Any, deque] = defaultdict(lambda: deque(maxlen=HISTORY_LIMIT))
        self._watchers: dict[Any, set[asyncio.Queue]] = defaultdict(set)
        self._printer_columns: dict[Any, list] = {}  # resource -> its CRD's additionalPrinterColumns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: kmock.Server | None = None
        self._thread: threading.Thread | None = None
        self._admission: list[Callable[[str, dict], str | None]] = []
        self._tokens: dict[str, tuple[str, str]] = {}  # bearer token -> (namespace, service account)
        self.unreachable_nodes: set[str] = set()  # nodes whose kubelet never confirms a Pod's deletion

    # ---- the public API ------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(cls, host: str = "127.0.0.1", netns: str | None = None) -> Iterator["KubeEmulator"]:
        """Serve a new emulator on a free port of `host` from a thread of its own; with `netns`,
        that thread listens inside the named network namespace (e.g. on its loopback)."""
        emulator = cls()
        emulator._start(host, netns)
        try:
            yield emulator
        finally:
            emulator._stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the emulator is not running"
        return str(self._server.url).rstrip("/")

    def declare(self, resource: str, *, kind: str, namespaced: bool = True, plural: str | None = None,
                singular: str | None = None, shortnames=(), categories=(), subresources=()) -> None:
        """Serve a resource ("group/version/plural") as if its CRD were installed."""
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=singular or kind.lower(),
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            shortnames=set(shortnames), categories=set(categories), subresources=set(subresources))

    def apply_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve every version of a CustomResourceDefinition manifest (as posting it would)."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            resource = kmock.resource(f"{spec['group']}/{version['name']}/{names['plural']}")
            self._printer_columns[resource] = version.get("additionalPrinterColumns") or []
            self.declare(
                f"{spec['group']}/{version['name']}/{names['plural']}", kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular"), shortnames=names.get("shortNames", ()),
                categories=names.get("categories", ()),
                subresources=set(version.get("subresources") or {}))

    def declare_feedhandlers(self) -> None:
        """Serve tickwire.dev/v1alpha1 feedhandlers from crds/feedhandler.yaml, with /status."""
        self.apply_crd(yaml.safe_load(FEEDHANDLER_CRD.read_text()))

    def declare_kopf_peering(self) -> None:
        """Serve kopf's peering resources (a second operator replica needs them)."""
        self.declare("kopf.dev/v1/clusterkopfpeerings", kind="ClusterKopfPeering", namespaced=False)
        self.declare("kopf.dev/v1/kopfpeerings", kind="KopfPeering")

    def configuration(self):
        """A kubernetes.client.Configuration pointing at this emulator."""
        import kubernetes.client
        config = kubernetes.client.Configuration()
        config.host = self.url
        return config

    def api_client(self):
        import kubernetes.client
        return kubernetes.client.ApiClient(self.configuration())

    def write_kubeconfig(self, directory: str | pathlib.Path) -> pathlib.Path:
        """A kubeconfig file for this emulator (for kopf, kubectl or the agent in a subprocess)."""
        path = pathlib.Path(directory) / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock-has-no-auth"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        }))
        return path

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """The stored object, or None (thread-safe enough for tests: a copy under no lock)."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def refuse(self, check: Callable[[str, dict], str | None]) -> None:
        """Admit creates through `check(resource, object)`: a message refuses one with 403 Forbidden
        (how PodSecurity, a ResourceQuota or a validating webhook answers), None admits it."""
        self._admission.append(check)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as ServiceAccount namespace/name (RBAC applies)."""
        token = f"sa-{namespace}-{name}-{uuid.uuid4().hex}"
        self._tokens[token] = (namespace, name)
        return token

    def call(self, coro_fn, *args):
        """Run `coro_fn(*args)` on the emulator's loop (to change objects from a test thread)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(timeout=30)

    # ---- thread and server ---------------------------------------------------------------------

    def _start(self, host: str, netns: str | None = None) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._stopping = asyncio.Event()
            try:
                async with self, kmock.Server(self, host=host) as server:
                    self._server = server
                    ready.set()
                    await self._stopping.wait()
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()

        def run() -> None:
            if netns is not None:
                try:
                    enter_netns(netns)
                except OSError as exc:
                    failure.append(exc)
                    ready.set()
                    return
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30) or failure:
            raise RuntimeError(f"the Kubernetes emulator did not start: {failure}")

    def _stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=30)

    # ---- request dispatch ----------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None or resource not in self.resources:
            return await super()._handle(request)  # discovery, or an unknown resource's 404
        info = self.resources[resource]
        method = getattr(request.method, "value", str(request.method)).upper()
        refused = self._forbidden(request, resource, method)
        if refused is not None:
            return refused
        try:
            if method == "GET" and request.params.get("watch") in ("true", "1"):
                return await self._watch(request, resource, info)
            if method == "GET" and request.name is None:
                return await self._list(request, resource, info)
            if method == "GET":
                obj = self._find(resource, request.namespace, request.name)
                if obj is None:
                    return self._not_found(resource, request.name)
                if self._wants_table(request, resource):
                    return self._table(request, resource, [obj], obj["metadata"]["resourceVersion"])
                return aiohttp.web.json_response(obj)
            if method == "POST" and request.name is None:
                return await self._create(request, resource, info)
            if method in ("PATCH", "PUT") and request.name is not None:
                return await self._write(request, resource, info, replace=(method == "PUT"))
            if method == "DELETE" and request.name is not None:
                return await self._delete(resource, request.namespace, request.name,
                                          grace=_grace_period(request))
        except _Gone as exc:
            return _status(410, "Expired", str(exc))
        except ValueError as exc:
            return _status(400, "BadRequest", str(exc))
        return _status(405, "MethodNotAllowed", f"{method} is not supported on {request.url.path}")

    # ---- RBAC for service-account tokens -------------------------------------------------------

    def _forbidden(self, request, resource, method: str) -> aiohttp.web.Response | None:
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        account = self._tokens.get(auth.removeprefix("Bearer ").strip())
        if account is None:
            return None  # the kubeconfig's token: a cluster admin
        if method == "GET":
            verb = "watch" if request.params.get("watch") in ("true", "1") else (
                "get" if request.name is not None else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method)
        what = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        if any(_rule_allows(rule, resource.group or "", what, verb, request.name)
               for rule in self._rules_for(*account, request.namespace)):
            return None
        user = f"system:serviceaccount:{account[0]}:{account[1]}"
        target = f'{resource.plural}.{resource.group} "{request.name}"' if resource.group else \
            f'{resource.plural} "{request.name}"'
        scope = f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
        return _status(403, "Forbidden", (
            f'{target if request.name else resource.plural} is forbidden: User "{user}" cannot {verb} '
            f'resource "{what}" in API group "{resource.group or ""}"{scope}'))

    def _rules_for(self, sa_namespace: str, sa_name: str, namespace: str | None) -> list[dict]:
        def bound(binding: dict) -> bool:
            return any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                       and s.get("namespace", binding["metadata"].get("namespace")) == sa_namespace
                       for s in binding.get("subjects") or [])

        rbac = "rbac.authorization.k8s.io/v1"
        bindings = [(b, namespace) for b in self._objects_of(f"{rbac}/rolebindings", namespace)] if namespace else []
        bindings += [(b, None) for b in self._objects_of(f"{rbac}/clusterrolebindings", None)]
        rules: list[dict] = []
        for binding, scope in bindings:
            if not bound(binding):
                continue
            ref = binding.get("roleRef") or {}
            role = self._find(kmock.resource(f"{rbac}/roles"), scope, ref.get("name")) if ref.get("kind") == "Role" \
                else self._find(kmock.resource(f"{rbac}/clusterroles"), None, ref.get("name"))
            rules += (role or {}).get("rules") or []
        return rules

    def _objects_of(self, resource: str, namespace: str | None) -> list[dict]:
        wanted = kmock.resource(resource)
        return [copy.deepcopy(stored.raw) for (res, ns, _), stored in list(self.objects.items())
                if res == wanted and not stored.deleted and ns == namespace]

    # ---- storage helpers -----------------------------------------------------------------------

    def _find(self, resource, namespace, name) -> dict | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    @staticmethod
    def _not_found(resource, name) -> aiohttp.web.Response:
        return _status(404, "NotFound", f'{resource.plural} "{name}" not found')

    async def _emit(self, resource, event_type: str, obj: dict) -> None:
        """Record and broadcast one watch event; the caller holds self._lock."""
        event = {"type": event_type, "object": copy.deepcopy(obj)}
        self._history[resource].append((self._revision, event))
        for queue in self._watchers[resource]:
            queue.put_nowait(event)

    def _next_version(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _store(self, resource, namespace, name, obj: dict) -> None:
        key = (resource, namespace, name)
        if key in self.objects:
            self.objects[key].history.append(obj)
        else:
            self.objects[key] = obj

    # ---- writes --------------------------------------------------------------------------------

    async def _create(self, request, resource, info) -> aiohttp.web.Response:
        body = request.data
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace if info.namespaced else None
        if info.namespaced:
            if namespace is None:
                raise ValueError(f"{resource.plural} are namespaced: POST to /namespaces/NS/{resource.plural}")
            if meta.get("namespace", namespace) != namespace:
                raise ValueError(f"metadata.namespace {meta['namespace']!r} does not match the URL's {namespace!r}")
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        if "status" in info.subresources:
            obj.pop("status", None)
        for check in self._admission:
            refusal = check(f"{resource.group}/{resource.version}/{resource.plural}".lstrip("/"), obj)
            if refusal:
                return _status(403, "Forbidden", f'{resource.plural} "{name}" is forbidden: {refusal}')
        async with self._lock:
            if self._find(resource, namespace, name) is not None:
                return _status(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                        resourceVersion=self._next_version())
            meta.pop("deletionTimestamp", None)
            obj.setdefault("apiVersion", f"{resource.group}/{resource.version}".lstrip("/"))
            obj.setdefault("kind", info.kind)
            self._store(resource, namespace, name, obj)
            await self._emit(resource, "ADDED", obj)
        if resource.plural == "customresourcedefinitions":
            self.apply_crd(obj)  # a real API server starts serving the new resource
        return aiohttp.web.json_response(obj, status=201)

    async def _write(self, request, resource, info, *, replace: bool) -> aiohttp.web.Response:
        namespace, name = request.namespace, request.name
        to_status = request.subresource == "status"
        if request.subresource not in (None, "status"):
            return _status(404, "NotFound", f"subresource {request.subresource!r} is not served")
        if to_status and "status" not in info.subresources:
            return _status(404, "NotFound", f"{resource.plural} have no status subresource")
        patch = request.data
        async with self._lock:
            old = self._find(resource, namespace, name)
            if old is None:
                return self._not_found(resource, name)
            current_version = old["metadata"]["resourceVersion"]
            if isinstance(patch, list):
                try:
                    new = jsonpatch.apply_patch(old, patch, in_place=False)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    # kopf reads 422 as "someone changed it meanwhile, retry on the next cycle".
                    return _status(422, "Invalid", f"the JSON patch does not apply: {exc}")
            elif isinstance(patch, Mapping):
                wanted = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted is not None and str(wanted) != current_version:
                    return _status(409, "Conflict", (
                        f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has '
                        f"been modified; please apply your changes to the latest version and try again"))
                if replace:
                    new = copy.deepcopy(dict(patch))
                    new.setdefault("metadata", {})
                else:
                    new = merge_patch(old, patch)
            else:
                raise ValueError("a patch must be a JSON object (merge patch) or a list (JSON patch)")

            # Only status through /status; everything but status through the object.
            if to_status:
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif "status" in info.subresources:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            new_uid = (new.get("metadata") or {}).get("uid")
            if not to_status and new_uid and new_uid != old["metadata"].get("uid"):
                return _status(422, "Invalid", (
                    f'{info.kind} "{name}" is invalid: metadata.uid: Invalid value: "{new_uid}": '
                    f"field is immutable"))
            # The server owns these, whatever the client sent.
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation",
                          "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if field in old["metadata"]:
                    new["metadata"][field] = old["metadata"][field]
                else:
                    new["metadata"].pop(field, None)
            if new == old:
                return aiohttp.web.json_response(old)  # no change: no new version, no event
            if {k: v for k, v in new.items() if k not in ("metadata", "status")} != \
                    {k: v for k, v in old.items() if k not in ("metadata", "status")}:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = self._next_version()
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                await self._remove(resource, namespace, name, new)
            else:
                self._store(resource, namespace, name, new)
                await self._emit(resource, "MODIFIED", new)
        return aiohttp.web.json_response(new)

    async def _delete(self, resource, namespace, name, grace: int | None = None) -> aiohttp.web.Response:
        async with self._lock:
            obj = self._find(resource, namespace, name)
            if obj is None:
                return self._not_found(resource, name)
            if self._terminates_gracefully(resource, obj, grace):
                await self._begin_termination(resource, namespace, name, obj, grace)
                return aiohttp.web.json_response(obj)
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = _now()
                    obj["metadata"]["resourceVersion"] = self._next_version()
                    self._store(resource, namespace, name, obj)
                    await self._emit(resource, "MODIFIED", obj)
                return aiohttp.web.json_response(obj, status=202)
            obj["metadata"]["resourceVersion"] = self._next_version()
            await self._remove(resource, namespace, name, obj)
        return aiohttp.web.json_response(obj)

    def _terminates_gracefully(self, resource, obj: dict, grace: int | None) -> bool:
        """A bound, running Pod whose node's kubelet cannot confirm its end stays Terminating
        until someone deletes it with grace 0 (a real API server waits for the kubelet too)."""
        if resource != kmock.resource("v1/pods") or grace == 0:
            return False
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        return (obj.get("spec") or {}).get("nodeName") in self.unreachable_nodes

    async def _begin_termination(self, resource, namespace, name, obj: dict, grace: int | None) -> None:
        """deletionTimestamp = now + grace (only ever moved earlier), as the API server sets it."""
        if grace is None:
            grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        meta = obj["metadata"]
        deadline = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=grace)
        stamp = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
        if meta.get("deletionTimestamp") and meta["deletionTimestamp"] <= stamp:
            return
        meta["deletionTimestamp"] = stamp
        meta["deletionGracePeriodSeconds"] = grace
        meta["resourceVersion"] = self._next_version()
        self._store(resource, namespace, name, obj)
        await self._emit(resource, "MODIFIED", obj)

    async def _remove(self, resource, namespace, name, obj: dict) -> None:
        """Delete for good, then collect the dependents (caller holds the lock)."""
        self._store(resource, namespace, name, obj)
        self.objects[(resource, namespace, name)].delete()
        await self._emit(resource, "DELETED", obj)
        owner_uid = obj["metadata"].get("uid")
        dependents = [
            (res, ns, n) for (res, ns, n), stored in list(self.objects.items())
            if not stored.deleted
            and any(ref.get("uid") == owner_uid
                    for ref in (stored.raw.get("metadata", {}).get("ownerReferences") or []))
        ]
        for res, ns, n in dependents:
            dependent = self._find(res, ns, n)
            if self._terminates_gracefully(res, dependent, None):
                await self._begin_termination(res, ns, n, dependent, None)
            elif dependent["metadata"].get("finalizers"):
                if not dependent["metadata"].get("deletionTimestamp"):
                    dependent["metadata"]["deletionTimestamp"] = _now()
                    dependent["metadata"]["resourceVersion"] = self._next_version()
                    self._store(res, ns, n, dependent)
                    await self._emit(res, "MODIFIED", dependent)
            else:
                dependent["metadata"]["resourceVersion"] = self._next_version()
                await self._remove(res, ns, n, dependent)

    # ---- reads ---------------------------------------------------------------------------------

    def _selected(self, request, resource) -> list[dict]:
        terms = _parse_label_selector(request.params.get("labelSelector", ""))
        fields = request.params.get("fieldSelector", "")
        found = []
        for (res, ns, _), stored in self.objects.items():
            if res != resource or stored.deleted:
                continue
            if request.namespace is not None and ns != request.namespace:
                continue
            obj = stored.raw
            if _labels_match(obj.get("metadata", {}).get("labels") or {}, terms) and _fields_match(obj, fields):
                found.append(copy.deepcopy(obj))
        return found

    def _matches(self, request, obj: dict, terms) -> bool:
        meta = obj.get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        return _labels_match(meta.get("labels") or {}, terms) and \
            _fields_match(obj, request.params.get("fieldSelector", ""))

    async def _list(self, request, resource, info) -> aiohttp.web.Response:
        async with self._lock:
            items = self._selected(request, resource)
            version = str(self._revision)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        if self._wants_table(request, resource):
            return self._table(request, resource, items, version)
        return aiohttp.web.json_response({
            "apiVersion": f"{resource.group}/{resource.version}".lstrip("/"),
            "kind": f"{info.kind}List", "metadata": {"resourceVersion": version}, "items": items})

    def _wants_table(self, request, resource) -> bool:
        """kubectl asks `Accept: application/json;as=Table;v=v1;g=meta.k8s.io, application/json`:
        a Table where the resource's CRD is known (built-in kinds get their plain list, which
        kubectl prints as NAME and AGE)."""
        if resource not in self._printer_columns:
            return False
        accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
        for media_type in accept.split(","):
            params = dict(p.strip().partition("=")[::2] for p in media_type.split(";")[1:])
            if (params.get("as"), params.get("v"), params.get("g")) == ("Table", "v1", "meta.k8s.io"):
                return True
        return False

    def _table(self, request, resource, objects, version) -> aiohttp.web.Response:
        try:
            table = to_table(objects, self._printer_columns[resource], resource_version=version,
                             include_object=request.params.get("includeObject", "Metadata"))
        except ValueError as exc:  # a printer column whose jsonPath cannot be read
            return _status(500, "InternalError", str(exc))
        return aiohttp.web.json_response(table)

    async def _watch(self, request, resource, info) -> aiohttp.web.StreamResponse:
        terms = _parse_label_selector(request.params.get("labelSelector", ""))
        since = request.params.get("resourceVersion")
        timeout = float(request.params["timeoutSeconds"]) if request.params.get("timeoutSeconds") else None
        queue: asyncio.Queue = asyncio.Queue()
        async with self._lock:  # the snapshot and the subscription happen at one instant
            if since in (None, "", "0") or request.params.get("sendInitialEvents") == "true":
                backlog = [{"type": "ADDED", "object": obj} for obj in self._selected(request, resource)
                           if request.name is None or obj["metadata"]["name"] == request.name]
            else:
                history = self._history[resource]
                oldest = history[0][0] if history else self._revision + 1
                if int(since) < oldest - 1 and len(history) == history.maxlen:
                    raise _Gone(f"too old resource version: {since} ({oldest - 1})")
                backlog = [copy.deepcopy(e) for rev, e in history if rev > int(since)]
            self._watchers[resource].add(queue)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)  # noqa: SLF001
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            for event in backlog:
                if self._matches(request, event["object"], terms):
                    await response.write(json.dumps(event).encode() + b"\n")
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=remaining)
                except asyncio.TimeoutError:
                    break
                if self._matches(request, event["object"], terms):
                    await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers[resource].discard(queue)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response


def _grace_period(request) -> int | None:
    """DeleteOptions.gracePeriodSeconds from the query or the body; None when not given."""
    value = request.params.get("gracePeriodSeconds")
    if value is None and isinstance(request.data, Mapping):
        value = request.data.get("gracePeriodSeconds")
    return None if value is None else int(value)


def _rule_allows(rule: Mapping[str, Any], group: str, resource: str, verb: str, name: str | None) -> bool:
    """One PolicyRule against a request (wildcards as RBAC has them)."""
    def has(values, wanted):
        return "*" in (values or ()) or wanted in (values or ())
    if not (has(rule.get("apiGroups"), group) and has(rule.get("resources"), resource)
            and has(rule.get("verbs"), verb)):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def load_yaml(path: str | pathlib.Path) -> Any:
    return yaml.safe_load(pathlib.Path(path).read_text())
