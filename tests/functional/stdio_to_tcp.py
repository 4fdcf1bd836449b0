"""Bridge stdin/stdout to a TCP port on 127.0.0.1: QEMU's ``guestfwd=...-cmd:`` runs one
per guest connection, so a guest with ``restrict=on`` reaches exactly one host port."""
import os
import socket
import sys
import threading


def main(port: int) -> None:
    conn = socket.create_connection(("127.0.0.1", port))

    def upstream() -> None:
        while True:
            data = os.read(0, 65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(data)

    threading.Thread(target=upstream, daemon=True).start()
    while True:
        data = conn.recv(65536)
        if not data:
            return
        os.write(1, data)


if __name__ == "__main__":
    main(int(sys.argv[1]))
