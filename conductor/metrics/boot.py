"""Boot transfers (TFTP and HTTP): bytes and transfers by result, counted as each ends
(``BootMetrics.transfer``, given to the boot servers), and the sessions open now
(read from the servers at scrape time)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class BootMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.bytes = Counter(
            "metalcast_boot_bytes", "Bytes sent to booting machines, by protocol.",
            ("protocol",), unit="bytes", registry=registry)
        self.sessions = Counter(
            "metalcast_boot_sessions", "Boot file transfers (TFTP) or file responses (HTTP) "
            "that ended, by protocol and result.", ("protocol", "result"), registry=registry)

    def transfer(self, protocol: str, complete: bool, sent: int) -> None:
        """One transfer ended: ``sent`` bytes of the file went out. The bytes first: a
        scrape that sees the session counted sees its bytes too."""
        if sent > 0:
            self.bytes.labels(protocol).inc(sent)
        self.sessions.labels(protocol, "complete" if complete else "aborted").inc()


class OpenSessions(Collector):
    """``metalcast_boot_sessions_open{protocol}``: what each server holds now."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]):
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("metalcast_boot_sessions_open", "TFTP transfers and "
                                   "HTTP connections open now.", labels=("protocol",))
        for protocol, count in sorted(self.counts().items()):
            family.add_metric([protocol], count)
        yield family
