"""The adversarial tier: each test replays one attack found on a running appliance
(loopback only, bounded in time) and asserts that it now fails to succeed."""
