"""A real single-node Apache Kafka broker (KRaft) for development and tests.

The broker's jars come from Maven Central through `mvn dependency:copy-dependencies` over the
pom beside this file, and are cached outside the work tree (keyed by the pom's hash, so bumping
the broker version in the pom provisions afresh). Each `LocalKafka` owns its ports and data
directory, so a test can stop and restart its own broker while the suite's shared one keeps
serving.

Command line: `python -m devstack.kafka provision` fetches the jars (idempotent);
`python -m devstack.kafka serve [--brokers 3]` runs a broker (or a three-node cluster,
devstack/cluster.py) in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.properties"
# Any fixed 22-character base64 id will do for a throwaway single-node cluster.
CLUSTER_ID = "cG9zdGJhY2stcGlwZWxpbg"


class BrokerError(RuntimeError):
    """The broker could not be provisioned, started or stopped; the message says what to do."""


def cache_root() -> Path:
    """Where jars and `make run` data live: outside the work tree, shared by every checkout."""
    configured = os.environ.get("POSTBACK_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "postback-pipeline"


def libs_dir() -> Path:
    pom_hash = hashlib.sha256(POM.read_bytes() + LOG_CONFIG.read_bytes()).hexdigest()[:12]
    return cache_root() / "kafka" / pom_hash / "libs"


def provision() -> Path:
    """Resolve the broker's jars once; later calls return the cached directory at once.

    A file lock makes concurrent first runs (parallel test sessions, `make run` beside
    `make test`) download once; the jars land in a temporary directory that is renamed into
    place, so an interrupted download never leaves a half-filled cache behind.
    """
    target = libs_dir()
    if (target / ".complete").exists():
        return target
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker's jars; install it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix="libs-"))
        log_path = target.parent / "mvn.log"
        command = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        with open(log_path, "wb") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"mvn could not resolve the Kafka jars; see {log_path}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        (target / ".complete").touch()
    return target


def free_port() -> int:
    """A loopback port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """For `preexec_fn`: the child (a JVM, a service) gets SIGTERM if its parent dies, even by
    kill -9, so no broker or service outlives the test or benchmark that started it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _answers_metadata(bootstrap: str, brokers: int) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return len(metadata.brokers()) >= brokers
    except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
        return False
    finally:
        await client.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers_metadata(bootstrap: str, brokers: int = 1) -> bool:
    """True when a broker at `bootstrap` answers a metadata request naming at least `brokers`
    live brokers; safe inside an event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _answers_metadata(bootstrap, brokers)).result()


class LocalKafka:
    """One broker process: its own ports and data directory, restartable on the same data.

    Use as a context manager, or call `start()` and `stop()`. `kill()` is SIGKILL, for fault
    tests; `pause()`/`resume()` are SIGSTOP/SIGCONT (a frozen process whose connections stay
    open, as in a long GC pause or a network partition). The broker keeps its data across
    `stop()`/`start()`, like a real broker restart.

    Alone it is a one-node cluster. `devstack.cluster.LocalCluster` makes several of them one
    cluster: then `quorum` names every voter and `replicas` is the internal topics' replication.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        node_id: int = 1,
        controller_port: int | None = None,
        quorum: str | None = None,
        replicas: int = 1,
    ) -> None:
        self._owns_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="postback-kafka-"))
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.node_id = node_id
        self._quorum = quorum or f"{node_id}@127.0.0.1:{self.controller_port}"
        self._replicas = replicas
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def _write_config(self) -> Path:
        replicas = str(self._replicas)
        # With replication, an internal topic keeps accepting writes with one replica down.
        min_isr = str(min(2, self._replicas))
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._quorum,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": replicas,
            # Services create their topics explicitly; a typo must fail, not auto-create.
            "auto.create.topics.enable": "false",
            # `min.insync.replicas` is left at the broker default (1), as on most clusters:
            # topics must set it themselves, and the services' topics do.
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Otherwise every first rebalance waits 3 s for members that never come.
            "group.initial.rebalance.delay.ms": "0",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def _java(self, main_class: str, *args: str) -> list[str]:
        heap = os.environ.get("DEVSTACK_KAFKA_HEAP", "512m")
        return [
            "java",
            "-Xms128m",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{provision()}/*",
            main_class,
            *args,
        ]

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Start the broker and return once it answers metadata requests.

        Formats KRaft storage on first start only, so a restart keeps every topic and offset.
        """
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting: a cluster's nodes must all be launched before
        any of them can answer (the controllers need a quorum)."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            formatted = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c", str(config)
                ),
                capture_output=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed: {formatted.stderr.decode()}")
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Ctrl-C at a terminal reaches the whole foreground group: in a group of its
                # own the broker outlives the services' drain instead of racing it.
                process_group=0,
                # The death signal follows the forking thread, so only the main thread uses it.
                preexec_fn=die_with_parent if in_main_thread else None,
            )

    def wait_ready(self, timeout: float = 60.0, brokers: int = 1) -> None:
        """Return once this broker answers metadata naming `brokers` live brokers."""
        process = self._process
        if process is None:
            raise BrokerError("the broker was not launched")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"the broker exited at start-up:\n{self._log_tail()}")
            if _port_open(self.port) and answers_metadata(self.bootstrap_servers, brokers):
                return
            time.sleep(0.1)
        self.kill()
        raise BrokerError(f"the broker did not answer within {timeout:.0f} s:\n{self._log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait for a clean shutdown; SIGKILL if it does not come in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the broker dies without flushing, as in a machine crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process freezes with its connections open; clients get no answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise BrokerError(f"broker {self.node_id} is not running")
        self._process.send_signal(signum)

    def close(self) -> None:
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no broker log)"

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def broker_or_configured(environ: dict[str, str] | None = None) -> Iterator[str]:
    """Yield bootstrap servers: the configured cluster if `KAFKA_BOOTSTRAP_SERVERS` is set,
    otherwise a fresh local broker that lives as long as the `with` block."""
    environ = dict(os.environ) if environ is None else environ
    configured = environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with LocalKafka() as broker:
        yield broker.bootstrap_servers


def wait_for_stop_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM, so that `with` blocks unwind and clean up."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.kafka", description=__doc__)
    parser.add_argument("command", choices=["provision", "serve"])
    parser.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    parser.add_argument(
        "--brokers", type=int, choices=(1, 3), default=1, help="1, or a three-node cluster"
    )
    args = parser.parse_args(argv)
    if args.command == "provision":
        started = time.monotonic()
        print(f"Kafka jars ready in {provision()} ({time.monotonic() - started:.1f} s)")
        return 0
    if args.brokers == 3:
        from devstack.cluster import LocalCluster  # a module that imports this one

        with LocalCluster(3) as cluster:
            print(f"Kafka cluster ready at {cluster.bootstrap_servers}", flush=True)
            print(f"(data and logs under {cluster.data_dir})", flush=True)
            wait_for_stop_signal()
        return 0
    with LocalKafka(port=args.port) as broker:
        print(f"Kafka ready at {broker.bootstrap_servers} (log: {broker.log_path})", flush=True)
        wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
