"""Prometheus metrics for the embedded containerd (and the Lima VM), built from a status report.

The same report feeds both ways out: the live `/metrics` endpoint of `warren containerd run`
(a collector that reads the manager's `status()` at scrape time, so nothing can drift out of date)
and `warren metrics`, which renders the supervisor's state file. prometheus_client is imported
inside the functions that use it so `warren version` never loads it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import WarrenError
from warren_bundle.fsutil import read_json
from warren_bundle.runtime.states import ALL as ALL_STATES
from warren_bundle.runtime.states import SERVING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from warren_bundle.paths import Paths

DEFAULT_METRICS_HOST = "127.0.0.1"
LIMA_STATUS_FILE = "status.json"
# A containerd process counts as running in the SERVING states (ORPHANED: alive, unsupervised).
STATES = tuple(state.value for state in ALL_STATES)

StatusSource = Callable[[], Mapping[str, Any]]


# --- the address to serve on ------------------------------------------------------------------


def parse_addr(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or a bare PORT (which binds loopback: exposing it must be explicit)."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_METRICS_HOST, text
    elif not host:
        raise ValueError(
            f"{text!r} names no host; write 127.0.0.1{text} (loopback) or 0.0.0.0{text} "
            "(every interface)"
        )
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{text!r}: {host!r} is not an IP address (or localhost)") from None
    return host, port


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the metrics ------------------------------------------------------------------------------


def is_running(report: Mapping[str, Any]) -> bool:
    return report.get("state") in SERVING and bool(report.get("containerd_pid"))


def read_lima_status(paths: Paths) -> dict[str, Any] | None:
    """The Lima manager's `<data-dir>/lima/status.json`, if it has written one (read as every
    state file is: a FIFO or a device there is no status, never a hang)."""
    return read_json(paths.lima_dir / LIMA_STATUS_FILE)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def containerd_families(report: Mapping[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    running = is_running(report)
    yield GaugeMetricFamily(
        "embedded_containerd_running",
        "Whether the embedded containerd process is up (1) or not (0).",
        value=1.0 if running else 0.0,
    )
    yield CounterMetricFamily(
        "embedded_containerd_restarts",
        "Restarts of containerd by the supervisor after an unexpected exit or failed liveness.",
        value=_number(report.get("restarts")) or 0.0,
    )
    uptime = _number(report.get("uptime_s")) if running else None
    yield GaugeMetricFamily(
        "embedded_containerd_uptime_seconds",
        "Seconds since the current containerd process became ready (0 when not running).",
        value=max(uptime or 0.0, 0.0),
    )
    state = GaugeMetricFamily(
        "embedded_containerd_state",
        "The supervisor's state: 1 for the current one.",
        labels=["state"],
    )
    current = report.get("state") or "STOPPED"
    for name in STATES if current in STATES else (*STATES, str(current)):
        state.add_metric([name], 1.0 if name == current else 0.0)
    yield state

    timings = report.get("timings") if isinstance(report.get("timings"), dict) else {}
    assert isinstance(timings, dict)
    for key, name, help_text in (
        ("startup_s", "embedded_startup_duration_seconds", "Seconds from start to ready."),
        (
            "socket_ready_s",
            "embedded_socket_ready_duration_seconds",
            "Seconds from spawning containerd until its socket answered a health check.",
        ),
    ):
        value = _number(timings.get(key))
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=value)
    extraction = _number(timings.get("extraction_s"))
    if extraction is not None:
        family = GaugeMetricFamily(
            "embedded_extraction_duration_seconds",
            "Seconds spent making <data-dir>/bin current (cached: the stamp matched).",
            labels=["cached"],
        )
        family.add_metric(["true" if timings.get("extraction_cached") else "false"], extraction)
        yield family

    if report.get("containerd_version") or report.get("payload_digest"):
        from warren_bundle import __version__

        info = InfoMetricFamily(
            "embedded_build", "The warren launcher and the containerd and runc it carries."
        )
        info.add_metric(
            [],
            {
                "warren_version": __version__,
                "containerd_version": str(report.get("containerd_version") or ""),
                "runc_version": str(report.get("runc_version") or ""),
                "payload_digest": str(report.get("payload_digest") or ""),
            },
        )
        yield info


def lima_families(lima: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(
        "embedded_lima_running",
        "Whether the Lima VM runs and its containerd socket answers (1) or not (0).",
        value=1.0 if lima.get("running") is True else 0.0,
    )
    yield CounterMetricFamily(
        "embedded_lima_restarts",
        "Restarts of the Lima VM by warren.",
        value=_number(lima.get("restarts")) or 0.0,
    )
    memory = _number(lima.get("memory_bytes"))
    if memory is not None:
        yield GaugeMetricFamily(
            "embedded_lima_memory_bytes", "Memory allocated to the Lima VM.", value=memory
        )


class StatusCollector:
    """A prometheus collector that asks for a fresh report at every scrape."""

    def __init__(self, source: StatusSource, lima_source: Callable[[], dict[str, Any] | None]):
        self._source = source
        self._lima_source = lima_source

    def collect(self) -> Iterator[Metric]:
        yield from containerd_families(self._source())
        lima = self._lima_source()
        if lima is not None:
            yield from lima_families(lima)


def _registry(collector: Collector) -> Any:
    from prometheus_client import CollectorRegistry

    # A private registry: no process/platform/gc collectors, only what the report says.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(report: Mapping[str, Any], lima: dict[str, Any] | None = None) -> str:
    """The Prometheus text exposition of one report."""
    from prometheus_client import generate_latest

    collector = StatusCollector(lambda: report, lambda: lima)
    return generate_latest(_registry(collector)).decode()


# --- the endpoint -----------------------------------------------------------------------------


# An idle or slow client holds a thread and a file descriptor: each connection gets this long
# per read or write, and at most this many are served at once (the rest are closed on accept).
IO_TIMEOUT = 10.0
MAX_CONNECTIONS = 32


def _make_server(host: str, port: int, registry: Any) -> Any:
    """A threading WSGI server for prometheus_client's app, with timeouts and a connection cap.

    prometheus_client's own start_http_server has neither: a few hundred idle connections took
    a thread and an fd each, until the supervisor could not open containerd's log (EMFILE).
    """
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Handler(WSGIRequestHandler):
        timeout = IO_TIMEOUT  # StreamRequestHandler.setup(): settimeout on the connection

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged."""

    class Server(ThreadingWSGIServer):
        address_family = family[0]
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        request_queue_size = 128  # listen() backlog: socketserver's 5 makes clients retry SYNs

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)  # over the cap: closed at once
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    return make_server(
        str(family[4][0]), port, make_wsgi_app(registry), Server, handler_class=Handler
    )


class MetricsServer:
    """`/metrics` on host:port, served from daemon threads for the life of the process."""

    def __init__(self, host: str, port: int, source: StatusSource, paths: Paths) -> None:
        import threading

        registry = _registry(StatusCollector(source, lambda: read_lima_status(paths)))
        try:
            self._httpd = _make_server(host, port, registry)
        except OSError as exc:
            raise WarrenError(
                f"cannot serve metrics on {format_addr(host, port)}: {exc.strerror or exc}",
                "pick a free address with --metrics-addr HOST:PORT, or omit it",
            ) from exc
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        bound_port = int(self._httpd.server_address[1])
        self.address = format_addr(host, bound_port)

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def scrape(address: str, timeout: float = 2.0) -> str:
    """GET http://<address>/metrics (raises OSError when nothing serves there)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
        return str(reply.read().decode())
