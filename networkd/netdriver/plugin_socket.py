"""The Docker plugin's listening socket, made by the supervisor (root) and kept open.

Docker finds a plugin by its socket under ``/run/docker/plugins/`` (the file name is the
driver name) and only root may create it there. The supervisor binds it once and hands
the listening socket to every ``netplugin`` worker it starts, like the DNS sockets: a
restarted plugin worker loses no connection (they wait in the backlog) and never needs
root. The socket is 0600: Docker runs as root, nobody else may talk to the plugin.
"""

import errno
import os
import socket
import stat

BACKLOG = 256


def open_plugin_socket(path: str) -> socket.socket:
    """Bind and listen on ``path``; a stale socket file is replaced, a live one is an error."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: left by a killed daemon
        else:
            raise OSError(errno.EADDRINUSE, f"another process serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock


def close_plugin_socket(sock: socket.socket, path: str) -> None:
    """Close and remove the socket file, so Docker sees no plugin rather than a dead one."""
    sock.close()
    try:
        os.unlink(path)
    except OSError:
        pass
