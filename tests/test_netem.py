"""The network emulator (bench/netem.py) is checked before anything is measured
over it: a UDP echo shows the configured delay, a TCP stream the configured
rate, configured loss the matching share of lost probes, and a dark path goes
dark and comes back. Tolerances come from the settings (jitter, timer
granularity of the forwarder, binomial spread), not from the code under test."""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess

import pytest

from bench.netem import MIDDLE, PREFIX, emulated_path, tcp_goodput, udp_probe

from .test_recovery import skip_without_netns_tools

pytestmark = pytest.mark.anyio

TIMER_MS = 1.5
"""How early or late the forwarder may deliver: uvloop's timers have 1 ms
granularity, and ``fire`` takes packets due within 0.2 ms."""


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    skip_without_netns_tools()


def ms(xs: list[float]) -> list[float]:
    return sorted(x * 1000 for x in xs)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def test_udp_round_trip_shows_the_configured_delay_per_direction() -> None:
    delay, jitter = 15.0, 3.0
    async with emulated_path(delay_ms=delay, jitter_ms=jitter) as net:
        # probes 2 ms apart with +-3 ms jitter would overtake each other if
        # the emulator reordered
        probe = await udp_probe(net, "a", "b", n=150, interval_ms=2)
        assert probe.lost_share == 0
        assert probe.order == sorted(probe.order), "jitter reordered packets"
        rtt = ms(probe.received)
        assert rtt[0] >= 2 * (delay - jitter) - 2 * TIMER_MS, rtt[:5]
        # keeping order only ever delays a packet: the median sits at or above 2 x delay
        assert 2 * delay - 2 * TIMER_MS <= statistics.median(rtt) <= 2 * (delay + jitter) + 8
        # the slack above is for a loaded machine's scheduling, far less than
        # another delay_ms: a doubled delay would fail
        assert pct(rtt, 0.9) <= 2 * (delay + jitter) + 15, rtt[-10:]

        # one direction only: a->b 30 ms, b->a none
        await net.set(jitter_ms=0)
        await net.set(src="a", dst="b", delay_ms=30)
        await net.set(src="b", dst="a", delay_ms=0)
        assert net.conditions["a", "b"].delay_ms == 30
        assert net.conditions["b", "a"].delay_ms == 0
        rtt = ms((await udp_probe(net, "a", "b", n=40, interval_ms=5)).received)
        assert len(rtt) == 40
        assert 30 - TIMER_MS <= statistics.median(rtt) <= 30 + 8, rtt
        assert rtt[0] >= 30 - TIMER_MS


async def test_tcp_stream_shows_the_configured_rate_and_a_short_queue_drops() -> None:
    nbytes = 4_000_000
    async with emulated_path(delay_ms=5, rate_mbit=20) as net:
        for rate in (20, 10):
            await net.set(rate_mbit=rate)
            mbit = nbytes * 8 / await tcp_goodput(net, "a", "b", nbytes) / 1e6
            # the limit counts IP bytes, so goodput (payload) stays below it;
            # slow start, the final acknowledgement and a loaded machine cost a little
            assert 0.6 * rate <= mbit <= rate, (rate, mbit)
        stats = await net.stats()
        assert stats["a>b"]["queue_dropped"] == 0
        assert stats["a>b"]["lost"] == 0
        assert stats["a>b"]["forwarded"] > nbytes / 1500

        # a 4-packet bottleneck buffer overflows under a TCP stream: drop-tail
        await net.set(queue_packets=4)
        await tcp_goodput(net, "a", "b", 1_000_000)
        assert (await net.stats())["a>b"]["queue_dropped"] > 0


async def test_loss_shows_as_that_share_of_lost_probes_in_that_direction_only() -> None:
    n, loss = 400, 0.2
    async with emulated_path() as net:
        clean = await udp_probe(net, "a", "b", n=100, interval_ms=1)
        assert clean.lost_share == 0
        await net.set(src="a", dst="b", loss=loss)
        probe = await udp_probe(net, "a", "b", n=n, interval_ms=1, timeout_ms=500)
        spread = 4 * math.sqrt(loss * (1 - loss) / n)  # 4 sigma of a binomial share
        assert abs(probe.lost_share - loss) <= spread, probe.lost_share
        stats = await net.stats()
        assert stats["b>a"]["lost"] == 0  # the echoes' direction was left alone
        assert stats["a>b"]["lost"] == round(probe.lost_share * n)


async def test_a_dark_path_drops_everything_and_comes_back() -> None:
    async with emulated_path(delay_ms=20) as net:
        assert (await udp_probe(net, "a", "b", n=20, interval_ms=5)).lost_share == 0
        await net.set(loss=1.0)
        dark = await udp_probe(net, "a", "b", n=20, interval_ms=5, timeout_ms=300)
        assert dark.received == []
        with pytest.raises(TimeoutError):  # TCP cannot get through either
            await asyncio.wait_for(tcp_goodput(net, "a", "b", 1000), 1.0)
        # the middle (where a signaling server can live) is still reachable
        beside = await udp_probe(net, "a", MIDDLE, n=20, interval_ms=5)
        assert beside.lost_share == 0
        # ... and not behind the emulated path (its round trip would be 40 ms)
        assert statistics.median(beside.received) < 0.02
        await net.set(loss=0.0)
        back = await udp_probe(net, "a", "b", n=20, interval_ms=5)
        assert back.lost_share == 0


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


async def test_namespaces_and_processes_are_gone_after_a_failure() -> None:
    class Boom(Exception):
        pass

    names: list[str] = []
    sleepers: list[asyncio.subprocess.Process] = []

    async def fail_inside() -> None:
        async with emulated_path(3) as net:
            assert [n.name for n in net.nodes] == ["p0", "p1", "p2"]
            names.extend([net.middle, *(n.ns for n in net.nodes)])
            sleepers.append(await net.exec("p2", "sleep", "600"))
            # three peers: every direction is forwarded
            for src, dst in (("p0", "p2"), ("p2", "p1")):
                assert (await udp_probe(net, src, dst, n=5)).lost_share == 0
            listed = namespaces()
            assert all(name.startswith(PREFIX) and name in listed for name in names)
            raise Boom

    with pytest.raises(Boom):
        await fail_inside()
    (sleeper,) = sleepers
    assert sleeper.returncode is not None
    listed = namespaces()
    assert not any(name in listed for name in names), listed


async def test_nothing_is_routed_beyond_the_emulated_peers() -> None:
    async with emulated_path(tcp_congestion="reno") as net:
        cc = await net.exec(
            "b", "cat", "/proc/sys/net/ipv4/tcp_congestion_control", stdout=subprocess.PIPE
        )
        assert (await cc.communicate())[0].decode().strip() == "reno"
        before = (await net.stats())["stray"]["packets"]
        proc = await net.python(
            "a", "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.sendto(b'x', ('10.99.200.2', 9))",  # in the emulator's range, no such peer
        )  # fmt: skip
        assert await proc.wait() == 0
        # it reached the forwarder (the only way out of a) and went no further
        async with asyncio.timeout(5):
            while (await net.stats())["stray"]["packets"] == before:
                await asyncio.sleep(0.05)
        routes = subprocess.run(
            ["ip", "-n", net.middle, "route", "show", "table", "main"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "default" not in routes
