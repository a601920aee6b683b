"""Who the unprivileged workers run as, checked once at start (exit 78 on a problem).

``-user`` runs the watcher, the elector and the api; ``-dns.user`` runs the DNS replicas,
the only processes that parse bytes from the network. The rules, each a clear message
naming the flag:

- both accounts exist. A missing one is an error, not a silent ``nobody``: the operator
  asked for a specific account. ``-user.fallback ACCOUNT`` names an account to use instead
  (the Go-era behaviour was ``nobody``).
- neither is root.
- they differ in uid and in primary group (workers drop every supplementary group). A DNS
  replica running as the elector's uid could replace the elector's bus endpoint and so
  steer the root applier; one in the elector's group could connect to the applier's
  endpoint. So two accounts falling back to the same ``nobody`` are refused too.
- each can read the Python and networkd it will import after dropping root. A daemon
  installed on a Python under ``/root`` otherwise crash-loops its workers with
  ``No module named 'asyncio'``; here the message names the path that is not readable.

``resolve_accounts`` and ``first_unreadable`` are pure (lookups passed in, unit-tested);
``check_importable`` is the adapter that asks the kernel as each account.
"""

import dataclasses
import importlib.util
import os
import pwd
from typing import Callable, Dict, Iterable, List, Optional, Tuple

# Modules an unprivileged worker imports after it dropped root (lazily, or in the code it
# imports): their files and directories must be readable by the worker users.
WORKER_IMPORTS = (
    "asyncio",
    "_asyncio",
    "json",
    "networkd",
    "zmq",
    "msgpack",
    "etcd3",
    "grpc",
    "google.protobuf",
    "setproctitle",
)

FLAG_OF_KIND = {"user": "-user", "dns": "-dns.user", "plugin": "-netplugin.user"}


class UserError(Exception):
    """The worker accounts cannot be used as configured; the daemon exits 78."""


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


Lookup = Callable[[str], Tuple[int, int]]


def passwd_lookup(name: str) -> Tuple[int, int]:
    """(uid, primary gid) of ``name``; KeyError when there is no such account."""
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _account(kind: str, name: str, fallback: str, lookup: Lookup) -> Account:
    flag = FLAG_OF_KIND[kind]
    try:
        uid, gid = lookup(name)
        return Account(name, uid, gid)
    except KeyError:
        pass
    if not fallback:
        raise UserError(
            f"{flag}: no account named {name!r}; create it (the RPM does) or allow a"
            f" fallback with -user.fallback=nobody"
        )
    try:
        uid, gid = lookup(fallback)
    except KeyError:
        raise UserError(
            f"{flag}: no account named {name!r}, and -user.fallback {fallback!r} does not exist"
        ) from None
    return Account(fallback, uid, gid)


def resolve_accounts(
    names: Dict[str, str], fallback: str, lookup: Lookup = passwd_lookup
) -> Dict[str, Account]:
    """The account of each worker kind in use (``{"user": "networkd", "dns": ...}``)."""
    accounts = {kind: _account(kind, name, fallback, lookup) for kind, name in names.items()}
    for kind, account in accounts.items():
        if account.uid == 0:
            raise UserError(
                f"{FLAG_OF_KIND[kind]}: {account.name!r} is root; workers that run as it"
                " must not hold root (pick an unprivileged account)"
            )
    user, dns = accounts.get("user"), accounts.get("dns")
    if user is not None and dns is not None:
        if user.uid == dns.uid:
            raise UserError(
                f"-user {user.name!r} and -dns.user {dns.name!r} are the same uid {user.uid}:"
                " a DNS replica could replace the elector's bus endpoint; use two accounts"
            )
        if user.gid == dns.gid:
            raise UserError(
                f"-user {user.name!r} and -dns.user {dns.name!r} share the primary group"
                f" {user.gid}: a DNS replica could connect to the applier's bus endpoint;"
                " give each account its own group"
            )
    _check_plugin_account(accounts)
    return accounts


def _check_plugin_account(accounts: Dict[str, Account]) -> None:
    """The Docker plugin worker (-libnetwork) parses Docker's requests: like a DNS replica,
    it must share neither uid nor primary group with another worker kind (the netstore
    takes requests only from its uid; root endpoints admit the other kinds' groups)."""
    plugin = accounts.get("plugin")
    if plugin is None:
        return
    for kind in ("user", "dns"):
        other = accounts.get(kind)
        if other is None:
            continue
        if other.uid == plugin.uid or other.gid == plugin.gid:
            raise UserError(
                f"-netplugin.user {plugin.name!r} and {FLAG_OF_KIND[kind]} {other.name!r} share"
                " a uid or primary group: the plugin worker needs an account of its own"
            )


# ------------------------------------------------------------------ importability


def import_paths(modules: Iterable[str] = WORKER_IMPORTS) -> List[Tuple[str, str]]:
    """(path, module) for the files and package directories of ``modules`` (as found here)."""
    out: List[Tuple[str, str]] = []
    for module in modules:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        for location in spec.submodule_search_locations or ():
            out.append((location, module))
        if spec.origin and os.path.isabs(spec.origin):
            out.append((spec.origin, module))
    return out


Access = Callable[[str, int], bool]


def first_unreadable(paths: Iterable[Tuple[str, str]], access: Access) -> Optional[Tuple[str, str]]:
    """The first (path, module) an account cannot read: every ancestor directory must be
    searchable, a directory readable and searchable, a file readable. ``access`` is
    ``os.access`` as that account. Names the shallowest path that fails (``/root``)."""
    for path, module in paths:
        parts = os.path.abspath(path).split(os.sep)[1:]
        ancestors = ["/" + "/".join(parts[:i]) for i in range(len(parts))]
        for ancestor in ancestors:
            if not access(ancestor, os.X_OK):
                return ancestor, module
        is_dir = os.path.isdir(path)
        if not access(path, os.R_OK | (os.X_OK if is_dir else 0)):
            return path, module
    return None


def check_importable(accounts: Dict[str, Account], paths: List[Tuple[str, str]]) -> None:
    """Fork, become each account, and check with ``os.access`` (so ACLs count too)."""
    for kind, account in accounts.items():
        found = _unreadable_as(account, paths)
        if found is not None:
            path, module = found
            raise UserError(
                f"{FLAG_OF_KIND[kind]}: user {account.name!r} (uid {account.uid}) cannot read"
                f" {path} (needed to import {module}): install networkd on a Python that every"
                " worker user can read (not under /root)"
            )


def _unreadable_as(account: Account, paths: List[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    # Called before any thread or fork server exists, so a plain fork is safe.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(account.gid)
            os.setuid(account.uid)
            found = first_unreadable(paths, os.access)
            if found is not None:
                os.write(write_end, "\0".join(found).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise UserError(f"cannot check what user {account.name!r} may read (could not become it)")
    if not data:
        return None
    path, _, module = data.decode().partition("\0")
    return path, module
