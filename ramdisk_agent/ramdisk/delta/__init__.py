"""Delta payloads: a signed operation list that updates a disk in place.

``deploy`` fetches the payload and runs ``apply``, which checks the source disk
(``source``: one sequential pass of O_DIRECT reads, hashed on lanes), writes the new
bytes and reads them back from the device (``target``, with ``ioqueue``: native AIO);
``ranges`` plans the reads and checks each range's digest as the bytes arrive.
"""
