"""A small TCP proxy for simulating a database outage without touching the database server.

    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    url = proxy.url("postgresql://postgres@127.0.0.1:5432/db")   # ...:<proxy port>/db
    proxy.cut()       # connections through it are closed, new ones refused: the server is "down"
    proxy.restore()   # listening again on the same port: the server is "back"
    proxy.blackhole() # connections stay open and new ones are accepted, but nothing gets
                      # through: a network partition, a failover, a saturated server
    proxy.restore()   # the partition heals: what was held back is delivered, as TCP would
    proxy.close()

Threads: one accepts, two per connection pump bytes.  `cut` closes the listening socket (a
connect gets ECONNREFUSED, as from a stopped server) and every connection in flight (its
clients see the connection drop, as when the server is killed).  `blackhole` keeps everything
open and stops the pumps: bytes already read wait in the proxy, the rest in the kernel's buffers,
so neither end sees an error or an answer, and `restore` delivers them in order, as TCP's
retransmissions do when a partition heals.  (Being a userspace proxy, it still ACKs what it reads:
keepalives and `tcp_user_timeout` cannot detect this hang, only the application's deadlines can.)

Importable as `tcp_proxy` (tests/ is on sys.path for the rootdir conftest).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1"):
        self.target = target
        self.host = host
        self.port = 0
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self.accepted = 0

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        listener = self._bind() if self.port == 0 else self._bind_to(self.port)
        listener.listen(128)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _bind(self) -> socket.socket:
        """A port below the kernel's ephemeral range: a port the kernel handed out (bind to
        port 0) could be given to some outgoing connection while the proxy is cut, and
        `restore` could not have it back."""
        low = _ephemeral_low()
        for _ in range(200):
            with contextlib.suppress(OSError):
                return self._bind_to(random.randrange(max(low - 12000, 1024), low))
        raise OSError("no free port below the ephemeral range")

    def _bind_to(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, port))
        except OSError:
            listener.close()
            raise
        return listener

    def cut(self) -> None:
        """The database goes away: refuse new connections and drop the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:  # the pumps wake up, and the last of each pair closes them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def blackhole(self) -> None:
        """The database hangs: nothing gets through, nothing is refused or closed."""
        self._flowing.clear()

    def restore(self) -> None:
        """The database is back, on the same port (after `cut`), or reachable again (after
        `blackhole`)."""
        self._flowing.set()
        if self._listener is None:
            self.start()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._flowing.set()  # pumps held by a black hole wake up and find their sockets gone

    @property
    def up(self) -> bool:
        return self._listener is not None and self._flowing.is_set()

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- the threads ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            if not self._await_flow(client):
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.accepted += 1
            pumps = [2]  # the second pump to finish closes both sockets
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, pumps), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pumps: list[int]) -> None:
        try:
            while data := source.recv(65536):
                if not self._await_flow(source):
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):  # wakes the other pump, if it still runs
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                pumps[0] -= 1
                last = pumps[0] == 0
                if last:
                    self._sockets.discard(source)
                    self._sockets.discard(sink)
            if last:
                source.close()
                sink.close()

    def _await_flow(self, sock: socket.socket) -> bool:
        """Hold a connection while the proxy is a black hole; False if it was cut or closed
        meanwhile."""
        while not self._flowing.wait(0.1):
            if self._closed:
                sock.close()
                return False
        return True


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
