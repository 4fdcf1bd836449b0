"""The host's A/B image update engine (issue 16, agent side).

An update_engine-like client for installed hosts: Omaha checks against the appliance
(client.py), the passive GPT slot written and verified (install.py over slotdev.py and
slotwrite.py), health-gated mark-good and rollback reports (health.py), reboot
strategies with maintenance windows and appliance leases (reboot.py, window.py), all
driven by engine.py with its state in a JSON file (state.py) so a restart mid-update is
safe. Settings come from a Flatcar-style update.conf (config.py); the CLI is
``metalcast-agent update check|status|mark-good|daemon`` (cli.py).
"""
