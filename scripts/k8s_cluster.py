"""A throwaway Kubernetes control plane without a container engine, for the chart's checks.

etcd and kube-apiserver (built by scripts/k8s-tools.sh) on free loopback ports,
in a temporary directory, authenticated by a static admin token; with `--nodes`, also
kube-controller-manager, kube-scheduler and kwok with one fake node, so Deployments become
available and Job pods complete (nothing really runs). Everything stops, apiserver before
etcd, when the command exits — also on Ctrl-C or SIGTERM.

    python3 scripts/k8s_cluster.py TOOLS_DIR [--nodes] -- COMMAND ...

COMMAND runs with KUBECONFIG set; its exit status is this script's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _die_with_parent() -> None:
    """In the child: SIGTERM when this script dies, even by SIGKILL (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControlPlane:
    def __init__(self, tools: Path, work: Path, *, nodes: bool) -> None:
        self.bin = tools / "bin"
        self.tools = tools
        self.work = work
        self.nodes = nodes
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.kubeconfig = work / "kubeconfig"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # this script starts no threads
        )
        self.procs.append((name, proc))

    def _wait(self, what: str, check: object, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    tail = (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise SystemExit(f"k8s-cluster: {name} exited ({proc.returncode}):\n{tail}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.3)
        raise SystemExit(
            f"k8s-cluster: {what} not ready after {timeout:.0f} s (logs in {self.work})"
        )

    def _api_ready(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its own throwaway self-signed certificate
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/readyz",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            # An https URL this script built.
            with urllib.request.urlopen(request, context=context, timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self) -> None:
        etcd_port, peer_port = _free_port(), _free_port()
        self._start(
            "etcd",
            [
                str(self.bin / "etcd"),
                f"--data-dir={self.work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            ],
        )
        sa_key = self.work / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
        )
        (self.work / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        self._start(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.work / 'certs'}",
                f"--token-auth-file={self.work / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                # No pod really runs, so no token controller feeds the admission plugin.
                "--disable-admission-plugins=ServiceAccount",
            ],
        )
        self._write_kubeconfig()
        self._wait("kube-apiserver", self._api_ready)
        if self.nodes:
            self._start_nodes(sa_key)

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster: {{server: "https://127.0.0.1:{self.port}", insecure-skip-tls-verify: true}}
users:
  - name: admin
    user: {{token: "{self.token}"}}
contexts:
  - name: local
    context: {{cluster: local, user: admin, namespace: default}}
current-context: local
"""
        )
        self.kubeconfig.chmod(0o600)

    def _start_nodes(self, sa_key: Path) -> None:
        kc = f"--kubeconfig={self.kubeconfig}"
        self._start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                kc,
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={sa_key}",
                "--use-service-account-credentials=false",
                "--controllers=*,-serviceaccount-token",
            ],
        )
        self._start(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                kc,
                "--leader-elect=false",
                f"--secure-port={_free_port()}",  # not 10259: another cluster may hold it
                "--bind-address=127.0.0.1",
            ],
        )
        self._start(
            "kwok",
            [
                str(self.bin / "kwok"),
                kc,
                f"--config={self.tools / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                "--node-lease-duration-seconds=40",  # heartbeats, or the node turns NotReady
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=10.0.0.1",
                "--server-address=127.0.0.1:0",
            ],
        )
        node = """apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 100Gi}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 100Gi}
"""
        self._kubectl(["apply", "-f", "-"], node)
        self._wait("the kwok node", self._node_ready)
        # The node lifecycle controller taints a new node not-ready until it heartbeats.
        self._kubectl(
            ["taint", "nodes", "kwok-node-0", "node.kubernetes.io/not-ready-"], None, check=False
        )

    def _kubectl(self, args: list[str], stdin: str | None, *, check: bool = True) -> str:
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and out.returncode != 0:
            raise SystemExit(f"k8s-cluster: kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def _node_ready(self) -> bool:
        status = self._kubectl(
            [
                "get",
                "node",
                "kwok-node-0",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ],
            None,
            check=False,
        )
        return status.strip() == "True"

    def stop(self) -> None:
        # Reverse order: kwok and the controllers, the apiserver, then etcd.
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tools", type=Path, help="the directory scripts/k8s-tools.sh printed")
    parser.add_argument("--nodes", action="store_true", help="controllers, scheduler, kwok node")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    if not command:
        parser.error("no command after --")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="elevate-k8s-") as work:
        plane = ControlPlane(args.tools.resolve(), Path(work), nodes=args.nodes)
        try:
            plane.start()
            env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
            env["PATH"] = f"{plane.bin}{os.pathsep}{env.get('PATH', '')}"
            return subprocess.run(command, env=env, check=False).returncode
        finally:
            plane.stop()


if __name__ == "__main__":
    raise SystemExit(main())
