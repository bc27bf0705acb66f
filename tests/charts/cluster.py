"""Run rendered manifests as local processes: a stand-in for a cluster's kubelet and DNS.

Each Deployment/StatefulSet replica becomes one process running the container's command with
the environment the manifests give it (ConfigMaps, Secrets, the downward API). What a cluster
provides is mapped, and nothing else is changed:

- every container port gets a free localhost port; a `*_PORT` variable holding a container
  port is given that port, and a Service name `host:port` (any DNS form) becomes the
  localhost port of a pod behind it;
- every volume is a folder: emptyDir and claims are new folders, Secrets and ConfigMaps are
  written out from the rendered objects (or from Secrets the test provides, standing in for
  what cert-manager or the bootstrap Job writes), hostPath is the host folder itself; a
  variable naming a path under a mount names the same path under that folder;
- `python` is this interpreter; a process that exits is restarted, as the kubelet would.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charts.rendering import Manifests

BIND_ALL = "0.0.0.0"


# Below Linux's ephemeral range (32768-60999): ports handed to pods here cannot be taken by
# outgoing connections or by other tests' port-0 binds between allocation and use.
_PORTS = range(20000, 32000)
_handed: set[int] = set()


def free_port() -> int:
    for port in random.sample(_PORTS, 200):
        if port in _handed:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise OSError("no free localhost port between 20000 and 32000")


@dataclass
class Pod:
    name: str
    labels: dict[str, str]
    container: dict[str, Any]
    ports: dict[int, int]  # container port -> localhost port
    named_ports: dict[str, int]
    mounts: dict[str, Path]  # mountPath -> folder
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log: Path | None = None

    def local(self, path: str) -> str:
        for mount, folder in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return str(folder / path[len(mount) :].lstrip("/"))
        return path


class LocalCluster:
    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = namespace
        self.secrets: dict[str, dict[str, bytes]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        self.services: list[dict[str, Any]] = []
        self.pods: list[Pod] = []

    # What the API server would hold

    def add_secret(self, name: str, data: dict[str, bytes]) -> None:
        self.secrets[name] = data

    def load(self, manifests: Manifests) -> None:
        """Register ConfigMaps, Secrets and Services, then create every workload's pods."""
        for item in manifests:
            name = item["metadata"]["name"]
            if item["kind"] == "ConfigMap":
                self.config_maps[name] = item.get("data", {})
            elif item["kind"] == "Secret":
                data = {k: base64.b64decode(v) for k, v in item.get("data", {}).items()}
                self.secrets.setdefault(name, data)
            elif item["kind"] == "Service":
                self.services.append(item)
        for workload in manifests.workloads():
            replicas = workload["spec"].get("replicas", 1)
            for index in range(replicas):
                self.pods.append(
                    self._create_pod(workload, f"{workload['metadata']['name']}-{index}")
                )

    # The kubelet

    def _create_pod(self, workload: dict[str, Any], name: str) -> Pod:
        template = workload["spec"]["template"]
        claims = tuple(
            c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])
        )
        return self.pod_from_spec(name, template["metadata"]["labels"], template["spec"], claims)

    def pod_from_spec(
        self, name: str, labels: dict[str, str], spec: dict[str, Any], claims: tuple[str, ...] = ()
    ) -> Pod:
        (container,) = spec["containers"]
        ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes.update({claim: {"name": claim} for claim in claims})
        mounts = {
            mount["mountPath"]: self._volume(name, volumes[mount["name"]])
            for mount in container.get("volumeMounts", [])
        }
        return Pod(name, labels, container, ports, named, mounts)

    def run_to_completion(
        self, pod: Pod, extra_args: tuple[str, ...] = (), timeout_s: float = 60
    ) -> str:
        """A Job's or a test Pod's container: run once, return its output, fail on non-zero."""
        pod.env = self.environment(pod)
        pod.command = [*self.command(pod), *extra_args]
        done = subprocess.run(
            pod.command,
            env={"PATH": os.environ["PATH"], **pod.env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=pod.local("/tmp"),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{pod.name} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def _volume(self, pod: str, volume: dict[str, Any]) -> Path:
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        folder = self.root / "volumes" / pod / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            source = volume["secret"]
            data = self.secrets[source["secretName"]]
            self._write(folder, data, source, 0o440)
        elif "configMap" in volume:
            source = volume["configMap"]
            data = self.config_maps[source["name"]]
            self._write(folder, {k: v.encode() for k, v in data.items()}, source, 0o644)
        return folder

    @staticmethod
    def _write(folder: Path, data: dict[str, bytes], source: dict[str, Any], mode: int) -> None:
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            path = folder / item["path"]
            path.write_bytes(data[item["key"]])
            path.chmod(source.get("defaultMode", mode) | 0o600)

    def _resolve(self, pod: Pod, entry: dict[str, Any]) -> str:
        if "value" in entry:
            return str(entry["value"])
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.secrets[ref["name"]][ref["key"]].decode()
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            return pod.name
        raise ValueError(f"{pod.name}: unsupported env source {source}")

    def service_address(self, host: str, port: int) -> str | None:
        """localhost:port of a pod behind Service `host` (any DNS form) at `port`."""
        for service in self.services:
            name = service["metadata"]["name"]
            forms = {name, f"{name}.{self.namespace}", f"{name}.{self.namespace}.svc"}
            forms.add(f"{name}.{self.namespace}.svc.cluster.local")
            if host not in forms:
                continue
            for service_port in service["spec"]["ports"]:
                if service_port["port"] != port:
                    continue
                for pod in self.pods:
                    if service["spec"]["selector"].items() <= pod.labels.items():
                        target = service_port["targetPort"]
                        container_port = (
                            pod.named_ports[target] if isinstance(target, str) else target
                        )
                        return f"localhost:{pod.ports[container_port]}"
        return None

    def _map_value(self, pod: Pod, name: str, value: str) -> str:
        if value.startswith("{"):  # a JSON map of addresses (the registry's SITE_ENDPOINTS)
            mapping = json.loads(value)
            return json.dumps({k: self._map_value(pod, "", v) for k, v in mapping.items()})
        if name.endswith("_PORT") and value.isdigit() and int(value) in pod.ports:
            return str(pod.ports[int(value)])
        if name.endswith("_HOST") and value == BIND_ALL:
            return "127.0.0.1"
        host, _, port = value.rpartition(":")
        if host and port.isdigit():
            mapped = self.service_address(host, int(port))
            if mapped is not None:
                return mapped
        return pod.local(value) if value.startswith("/") else value

    def environment(self, pod: Pod) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in pod.container.get("envFrom", []):
            env.update(self.config_maps[source["configMapRef"]["name"]])
        for entry in pod.container.get("env", []):
            env[entry["name"]] = self._resolve(pod, entry)
        return {key: self._map_value(pod, key, value) for key, value in env.items()}

    def command(self, pod: Pod) -> list[str]:
        command = [*pod.container.get("command", []), *pod.container.get("args", [])]
        mapped = [self._map_value(pod, "", part) for part in command]
        if mapped and mapped[0] == "python":
            mapped[0] = sys.executable
        return mapped

    def start(self, pods: list[Pod] | None = None) -> None:
        for pod in pods if pods is not None else self.pods:
            pod.env = self.environment(pod)
            pod.command = self.command(pod)
            self._spawn(pod)

    def _spawn(self, pod: Pod) -> None:
        pod.log = self.root / "logs" / f"{pod.name}.log"
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        environment = {"PATH": os.environ["PATH"], "HOME": str(pod.local("/tmp")), **pod.env}
        with pod.log.open("ab") as log:
            pod.process = subprocess.Popen(
                pod.command,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=pod.local("/tmp"),
            )

    def supervise(self, max_restarts: int = 5) -> None:
        """Restart pods whose process exited (CrashLoopBackOff without the back-off)."""
        for pod in self.pods:
            if pod.process is not None and pod.process.poll() is not None:
                if pod.restarts >= max_restarts:
                    raise RuntimeError(f"{pod.name} keeps exiting:\n{self.tail(pod)}")
                pod.restarts += 1
                self._spawn(pod)

    def wait_ready(self, pods: list[Pod], timeout_s: float = 90) -> None:
        """Until each pod has written its ready file (FEDSILO_READY_FILE)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(pods)
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "not ready: " + ", ".join(f"{pod.name}\n{self.tail(pod)}" for pod in waiting)
                )
            self.supervise()
            waiting = [p for p in waiting if not Path(p.env["FEDSILO_READY_FILE"]).exists()]
            time.sleep(0.2)

    def pod(self, prefix: str) -> Pod:
        (found,) = [pod for pod in self.pods if pod.name.startswith(prefix)]
        return found

    @staticmethod
    def tail(pod: Pod, lines: int = 30) -> str:
        if pod.log is None or not pod.log.exists():
            return "(no log)"
        return "\n".join(pod.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> dict[str, int | None]:
        """SIGTERM every pod, as a rollout would; returns the exit codes."""
        for pod in self.pods:
            if pod.process is not None and pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for pod in self.pods:
            if pod.process is None:
                continue
            try:
                codes[pod.name] = pod.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                codes[pod.name] = pod.process.wait()
        return codes
