"""The Task's view of the node's driver_info: secrets decrypted once per version of
driver_info (a deploy reads the BMC credentials for every IPMI command), a new
version decrypted anew, and every caller gets its own copy."""
from __future__ import annotations

from cryptography.fernet import Fernet

from conductor.db.records import Node
from conductor.engine.task import Task
from conductor.secrets import Cipher


class CountingCipher(Cipher):
    def __init__(self):
        super().__init__(Fernet.generate_key())
        self.opened = 0

    def decrypt_dict(self, info):
        self.opened += 1
        return super().decrypt_dict(info)


class Drivers:
    def __init__(self, cipher):
        self.context = type("Context", (), {"cipher": cipher})()


def test_driver_info_is_decrypted_once_per_version():
    cipher = CountingCipher()
    sealed = cipher.encrypt_dict({"ipmi_address": "10.0.0.9", "ipmi_password": "s3cret"})
    task = Task(store=None, node=Node(id=1, driver_info=sealed), host="c",
                drivers=Drivers(cipher))
    reads = [task.driver_info for _ in range(20)]
    assert cipher.opened == 1
    assert all(r == {"ipmi_address": "10.0.0.9", "ipmi_password": "s3cret"} for r in reads)
    reads[0]["ipmi_password"] = "changed by a caller"
    assert task.driver_info["ipmi_password"] == "s3cret"   # a copy each time
    # driver_info replaced (Task.update writes a new dict): decrypted anew.
    task.node.driver_info = cipher.encrypt_dict(dict(task.driver_info, ipmi_password="new"))
    assert task.driver_info["ipmi_password"] == "new" and cipher.opened == 2
