"""The agent records in driver_internal_info: tokens stored hashed, command credentials
encrypted, the host agent's binding, and the upgrade of plain-text tokens."""
import json
import types

import pytest
from cryptography.fernet import Fernet

from conductor import errors
from conductor.drivers import internal_info as ii
from conductor.secrets import Cipher
from ramdisk_agent.wire.agent_tokens import host_command_token, token_hash, token_matches

TOKEN = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWpr"


def node(info, since="2024-01-01 00:00:00"):
    return types.SimpleNamespace(driver_internal_info=info, provision_updated_at=since)


@pytest.fixture
def cipher():
    return Cipher(Fernet.generate_key())


def test_token_hash_and_match():
    stored = token_hash(TOKEN)
    assert stored.startswith("sha256:") and TOKEN not in stored
    assert token_matches(stored, TOKEN)
    for wrong in (TOKEN + "x", "", None, 5, TOKEN.upper(), "\ud800"):
        assert not token_matches(stored, wrong)
    assert not token_matches(None, TOKEN) and not token_matches("", TOKEN)


def test_ramdisk_token_is_stored_hashed_and_encrypted(cipher):
    info = ii.with_token({"other": 1, "agent_url": "https://old"}, TOKEN, cipher)
    assert TOKEN not in json.dumps(info)
    assert info["other"] == 1 and "agent_url" not in info      # a new boot
    agent = ii.AgentBoot.of(node(info))
    assert agent.issued and agent.accepts(TOKEN) and not agent.accepts("nope")
    assert not agent.reachable                                 # no heartbeat yet
    # The stock IPA wants the lookup token back on every command: the conductor can
    # decrypt its copy, and only with the key.
    assert agent.command_token(cipher) == TOKEN
    with pytest.raises(errors.SecretsError):
        agent.command_token(Cipher(Fernet.generate_key()))
    with pytest.raises(errors.ConfigError):
        ii.with_token({}, TOKEN, None)
    beat = ii.with_heartbeat(info, "https://192.0.2.1:9999", "1", "now", None)
    assert ii.AgentBoot.of(node(beat)).reachable
    assert ii.without_agent(beat) == {"other": 1}


def test_host_token_binding_and_revocation(cipher):
    info = ii.with_host_token({"x": 1}, TOKEN, "2024-01-01 00:00:00", cipher)
    assert TOKEN not in json.dumps(info)
    assert host_command_token(TOKEN) not in json.dumps(info)   # encrypted too
    record = ii.HostAgentRecord.of(node(info))
    assert record.accepts(node(info), TOKEN) and not record.bound
    assert not record.accepts(node(info, since="2024-02-02 00:00:00"), TOKEN)  # redeployed
    bound = ii.with_host_heartbeat(info, "https://192.0.2.7:9999", "PEM", "1")
    record = ii.HostAgentRecord.of(node(bound))
    assert record.bound and record.bound_host == "192.0.2.7" and record.verify_ca == "PEM"
    assert record.command_credential(cipher) == host_command_token(TOKEN)
    reissued = ii.with_host_token(bound, "another", "2024-01-01 00:00:00", cipher)
    record = ii.HostAgentRecord.of(node(reissued))
    assert not record.bound and not record.accepts(node(reissued), TOKEN)
    assert ii.without_host_agent(bound) == {"x": 1}


def test_plain_text_tokens_of_older_versions_are_upgraded(cipher):
    old = {"agent_secret_token": TOKEN, "agent_url": "https://192.0.2.1:9999",
           "host_agent_token": "host-plain", "host_agent_url": "https://192.0.2.9:1",
           "host_agent_since": "s", "keep": True}
    new = ii.upgraded(old, cipher)
    assert TOKEN not in json.dumps(new) and "host-plain" not in json.dumps(new)
    agent = ii.AgentBoot.of(node(new))
    assert agent.accepts(TOKEN) and agent.command_token(cipher) == TOKEN and agent.reachable
    assert not any(key.startswith("host_agent") for key in new)   # revoked, not kept
    assert new["keep"] is True
    assert ii.upgraded(new, cipher) is None and ii.upgraded({}, cipher) is None
