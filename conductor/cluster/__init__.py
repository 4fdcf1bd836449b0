"""Several conductors on one database: membership and the hash ring.

``membership.py`` registers this conductor (name, group, hardware types), heartbeats
on its own thread and unregisters on a clean stop; ``hashring.py`` is Ironic's
consistent hash ring (pure); ``ring.py`` keeps the rings of the live conductors,
rebuilt from the ``conductors`` table at most every ``hash_ring_reset_interval`` or
when membership changes, and answers ``conductor_for(node)``.
"""
