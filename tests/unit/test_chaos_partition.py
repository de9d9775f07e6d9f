"""The names and addresses of a chaos run's hosts (nothing is created here)."""

from __future__ import annotations

from chaos.partition import Network


def test_every_host_has_its_own_address_and_names_linux_accepts() -> None:
    network = Network(2**31 - 1)  # the largest seed makes the longest names
    hosts = [network.host(f"nats-{i}") for i in range(1, 4)] + [network.host("agent")]
    names = [network.bridge] + [n for h in hosts for n in (h.outside, h.inside)]
    assert all(len(name) <= 15 for name in names), names  # IFNAMSIZ - 1
    assert len(set(names)) == len(names)
    addresses = [network.gateway] + [h.address for h in hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith(network.subnet + ".") for a in addresses)
    assert hosts[0].place.netns == hosts[0].ns and hosts[0].place.address == hosts[0].address
