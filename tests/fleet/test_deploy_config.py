"""What `fleet join` hands a SuperNode and `fleet serve` hands the ServerApp reads back the same on
the other side, through Flower's own parsers; bad input is refused before any process starts."""

from __future__ import annotations

import argparse
import socket

import pytest

from mobile_peft.core.errors import ConfigError
from mobile_peft.fleet.apps import FleetSetup, fleet_phone
from mobile_peft.fleet.partition import PartitionConfig
from mobile_peft.fleet.server import ServerConfig

flwr_config = pytest.importorskip("flwr.common.config")
deploy_apps = pytest.importorskip("mobile_peft.fleet.deploy_apps")


def test_node_config_round_trips_through_flowers_parser(fleet_bundle, tmp_path):
    spaced = tmp_path / "a phone's bundle"
    spaced.symlink_to(fleet_bundle, target_is_directory=True)
    config = deploy_apps.node_config(spaced, "fleet:3", None, None, (1, 2, 3), seed=5)
    parsed = flwr_config.parse_config_args([deploy_apps.node_config_arg(config)])
    assert parsed == config
    phone = deploy_apps.phone_from_node_config(parsed)
    # The deployed phone fleet:3 is the simulation's client 3: same examples, ranks and seeds.
    simulated = fleet_phone(FleetSetup(str(spaced.resolve()), PartitionConfig(tier_ranks=(1, 2, 3), seed=5), (), 4), 3)
    assert phone.name == "fleet-3"
    assert phone.examples == simulated.examples and phone.ranks == simulated.ranks
    assert phone.round_seed(2) == simulated.round_seed(2)


def test_a_tier_and_a_name_override_the_fleet_defaults(fleet_bundle):
    config = deploy_apps.node_config(fleet_bundle, "fleet:0", "alice", 2, (1, 2, 3), seed=0)
    phone = deploy_apps.phone_from_node_config(config)
    assert phone.name == "alice"
    assert set(r for slots in phone.ranks.values() for r in slots.values()) <= {2, 3, 4}  # tier 2 = rank 3 ± 1


def test_bad_node_configs_are_refused_clearly(fleet_bundle):
    with pytest.raises(ConfigError, match="double quote"):
        deploy_apps.node_config_arg(deploy_apps.node_config(fleet_bundle, 'fleet:"1"', None, None, (2,), 0))
    with pytest.raises(ConfigError, match="fleet:<client index>"):
        deploy_apps.phone_from_node_config(deploy_apps.node_config(fleet_bundle, "fleet:x", None, None, (2,), 0))
    with pytest.raises(ConfigError, match="lacks"):
        deploy_apps.phone_from_node_config({"data": "fleet:1"})


def test_the_run_config_is_valid_toml_for_flower(fleet_bundle, tmp_path):
    import tomli
    import tomli_w

    config = deploy_apps.server_run_config(fleet_bundle, ServerConfig(rule="fedavg", uniform_rank=2, lr=0.01), 3,
                                           tmp_path / "out", adapter=False, wait_seconds=9.0)
    assert tomli.loads(tomli_w.dumps(config)) == config
    assert config["uniform-rank"] == 2 and config["lr"] == 0.01 and config["adapter"] is False


def _args(**kw) -> argparse.Namespace:
    base = {"verbose": False, "rule": "rank-aware", "rounds": 1, "fraction": 1.0, "clients": 1, "local_steps": 1,
            "uniform_rank": None, "round_timeout": 5.0, "seed": 0, "out": None, "wait_seconds": 0.5,
            "data": "fleet:0", "client": None, "tier": None, "tiers": (1, 2), "linger_seconds": 1.0}
    base.update(kw)
    return argparse.Namespace(**base)


def test_serve_refuses_an_address_in_use_and_join_an_absent_server(fleet_bundle):
    from mobile_peft.fleet.deploy import join, serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ConfigError, match="already listens"):
            serve(_args(bundle=fleet_bundle, address=address))
    with pytest.raises(ConfigError, match="no fleet server answered"):
        join(_args(bundle=fleet_bundle, server=address))
    with pytest.raises(ConfigError, match="HOST:PORT"):
        serve(_args(bundle=fleet_bundle, address="9092"))
