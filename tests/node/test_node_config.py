"""Node options: destinations, AE titles, ports and the idle time are checked with clear messages."""

from __future__ import annotations

import pytest

from cspine.node.config import Destination, NodeConfig, NodeConfigError, parse_destination


def test_destinations_are_parsed_and_bad_ones_refused():
    assert parse_destination("pacs.example.org:104:MAIN_PACS") == Destination("pacs.example.org", 104,
                                                                              "MAIN_PACS")
    assert parse_destination("[::1]:4242:ORTHANC") == Destination("::1", 4242, "ORTHANC")
    assert str(parse_destination("127.0.0.1:4242:ORTHANC")) == "127.0.0.1:4242:ORTHANC"
    for bad, words in [("127.0.0.1:4242", "HOST:PORT:AET"), ("host:port:AET", "not a number"),
                       ("host:70000:AET", "65535"), ("host:104:" + "A" * 17, "1 to 16"),
                       ("host:104:BAD\\AE", "backslash")]:
        with pytest.raises(NodeConfigError, match=words):
            parse_destination(bad)


def test_node_config_checks_its_values(tmp_path):
    cfg = NodeConfig(" CSPINE ", spool=str(tmp_path), allow_ae=("PACS",))
    assert cfg.ae_title == "CSPINE" and cfg.host == "127.0.0.1" and cfg.port == 11112
    with pytest.raises(NodeConfigError, match="--idle-seconds"):
        NodeConfig("CSPINE", spool=tmp_path, idle_seconds=0)
    with pytest.raises(NodeConfigError, match="--allow-ae"):
        NodeConfig("CSPINE", spool=tmp_path, allow_ae=("",))
    with pytest.raises(NodeConfigError, match="--port"):
        NodeConfig("CSPINE", spool=tmp_path, port=-1)
