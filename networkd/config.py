"""The daemon's configuration: one frozen dataclass built from the command line.

Flags keep the Go daemon's single-dash spelling (``-etcd.endpoint``); new options follow
the same style. Each worker receives a Config holding only the fields it uses (the rest
at their defaults: ``networkd.workers.worker_config``), so etcd credentials reach the
watcher and the elector alone; ``section_digest`` tells the supervisor, on HUP, which
workers a change affects.
"""

import argparse
import dataclasses
import hashlib
import json
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from networkd import __version__

FENCING_POLICIES = ("hold", "strict")


class ConfigError(ValueError):
    """A flag value that cannot be used; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Config:
    # etcd
    etcd_endpoints: Tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_cacert: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    etcd_user: str = ""
    etcd_password: str = ""
    # node identity
    net_interface: str = "eth0"
    net_address: str = ""
    hostname: str = ""
    domain: str = "lain"
    # files and directories
    lock_filename: str = "/var/run/lain-networkd.pid"
    run_dir: str = "/run/networkd"
    config_file: str = ""
    log_file: str = ""
    resolv_conf: str = "/etc/resolv.conf"
    hosts_file: str = "/etc/hosts"
    docker_endpoint: str = "unix:///var/run/docker.sock"
    # users
    user: str = "networkd"
    dns_user: str = "networkd-dns"
    user_fallback: str = ""
    # DNS
    godns_addr: str = "127.0.0.1:53"
    dns_replicas: int = 2
    dns_ttl: int = 600
    dns_cache_size: int = 64  # MiB, per DNS process (the forwarder and each replica's copy)
    dns_case_randomize: bool = False
    api_addr: str = "127.0.0.1:3000"
    api_token_file: str = ""
    # VIPs
    vip_ttl: float = 2.0
    vip_fencing: str = "hold"
    vip_garp_refresh: float = 60.0
    vip_checks_dir: str = "/etc/networkd/checks.d"
    vip_notify: str = ""
    vip_notify_timeout: float = 10.0
    # leader jobs and ACL
    tinydns: bool = False
    swarm: bool = False
    webrouter: bool = False
    streamrouter: bool = False
    deployd: bool = False
    acl: bool = False
    # container networks: Docker's network and IPAM plugin (docs/NETWORKS.md)
    libnetwork: bool = False
    docker_plugin_socket: str = "/run/docker/plugins/networkd.sock"
    netplugin_user: str = "networkd-plugin"
    netplugin_ttl: float = 10.0
    netplugin_grace: float = 60.0
    # supervision
    stop_timeout: float = 10.0
    workers: Tuple[str, ...] = ()
    verbose: bool = False

    def section_digest(self, fields: Sequence[str]) -> str:
        """A digest of the named fields: equal digests mean the worker needs no restart."""
        data = {name: getattr(self, name) for name in fields}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def dns_host_port(self) -> Tuple[str, int]:
        return split_host_port(self.godns_addr, "-godns.addr")

    @property
    def api_host_port(self) -> Tuple[str, int]:
        return split_host_port(self.api_addr, "-api.addr")


def split_host_port(value: str, flag: str) -> Tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); a bad value raises ConfigError naming the flag."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag}: expected host:port, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


# flag name -> (Config field, kind, help). kind is str, int, float, bool or "list".
FLAGS: Dict[str, Tuple[str, str, str]] = {
    "etcd.endpoint": (
        "etcd_endpoints",
        "list",
        "etcd endpoints, comma-separated (http:// or https://)",
    ),
    "etcd.cacert": ("etcd_cacert", "str", "CA certificate for etcd TLS"),
    "etcd.cert": ("etcd_cert", "str", "client certificate for etcd TLS"),
    "etcd.key": ("etcd_key", "str", "client key for etcd TLS"),
    "etcd.user": ("etcd_user", "str", "etcd user name"),
    "etcd.password": ("etcd_password", "str", "etcd password"),
    "net.interface": ("net_interface", "str", "interface that carries the VIPs"),
    "net.address": (
        "net_address",
        "str",
        "this node's address (default: first IPv4 of -net.interface)",
    ),
    "hostname": ("hostname", "str", "this node's name (default: the OS hostname)"),
    "domain": ("domain", "str", "extra domain served by the tinydns job"),
    "lock.filename": ("lock_filename", "str", "pid lock file; a second daemon holding it exits"),
    "run.dir": ("run_dir", "str", "run directory: bus endpoints, control socket, lease id"),
    "config": ("config_file", "str", "file of flags, re-read on SIGHUP"),
    "log.file": ("log_file", "str", "log to this file instead of stderr (reopened on SIGUSR1)"),
    "resolv.conf": ("resolv_conf", "str", "resolv.conf kept pointing at the DNS server"),
    "hosts.file": ("hosts_file", "str", "hosts file served by the DNS server"),
    "docker.endpoint": ("docker_endpoint", "str", "Docker socket for the optional running-check"),
    "user": ("user", "str", "user of the unprivileged workers"),
    "dns.user": ("dns_user", "str", "user of the DNS replicas"),
    "user.fallback": (
        "user_fallback",
        "str",
        "account to run as when -user or -dns.user does not exist (e.g. nobody); empty: exit 78",
    ),
    "godns.addr": ("godns_addr", "str", "DNS listen address"),
    "dns.replicas": ("dns_replicas", "int", "number of DNS replica processes"),
    "dns.ttl": ("dns_ttl", "int", "TTL of answers for local names"),
    "dns.cache-size": (
        "dns_cache_size",
        "int",
        "MiB of forwarded answers cached (the forwarder and each replica hold one copy)",
    ),
    "dns.case-randomize": (
        "dns_case_randomize",
        "bool",
        "0x20: random letter case in upstream queries, answers must echo it (only for upstreams that do)",
    ),
    "api.addr": ("api_addr", "str", "HTTP API listen address"),
    "api.token-file": (
        "api_token_file",
        "str",
        "file holding the bearer token that allows VIP writes over HTTP (unset: writes 403)",
    ),
    "vip.ttl": ("vip_ttl", "float", "node lease TTL in seconds"),
    "vip.fencing": ("vip_fencing", "str", "hold or strict: what an owner does when etcd is lost"),
    "vip.garp.refresh": ("vip_garp_refresh", "float", "seconds between gratuitous ARP refreshes"),
    "vip.checks.dir": (
        "vip_checks_dir",
        "str",
        "directory of this node's VIP check files (the only checks that may exec)",
    ),
    "vip.notify": (
        "vip_notify",
        "str",
        "executable run as IP OLD NEW on each local VIP state change",
    ),
    "vip.notify.timeout": ("vip_notify_timeout", "float", "seconds a -vip.notify run may take"),
    "tinydns": ("tinydns", "bool", "leader job: tinydns domain servers"),
    "swarm": ("swarm", "bool", "leader job: swarm.lain"),
    "webrouter": ("webrouter", "bool", "leader job: webrouter tinydns fqdns"),
    "streamrouter": ("streamrouter", "bool", "leader job: streamrouter VIP pool"),
    "deployd": ("deployd", "bool", "leader job: deployd.lain"),
    "acl": ("acl", "bool", "apply the INPUT ACL"),
    "libnetwork": (
        "libnetwork",
        "bool",
        "serve Docker's network and IPAM plugin (container networks)",
    ),
    "docker.plugin.socket": (
        "docker_plugin_socket",
        "str",
        "unix socket of the Docker network plugin (its name is the driver name)",
    ),
    "netplugin.user": ("netplugin_user", "str", "user of the Docker plugin worker"),
    "netplugin.ttl": (
        "netplugin_ttl",
        "float",
        "lease TTL in seconds of this node's container-network routes",
    ),
    "netplugin.grace": (
        "netplugin_grace",
        "float",
        "seconds before an address Docker does not know is reclaimed",
    ),
    "stop.timeout": ("stop_timeout", "float", "seconds a worker has to stop before SIGKILL"),
    "workers": ("workers", "list", "run only these workers (testing aid), comma-separated"),
    "verbose": ("verbose", "bool", "debug logging"),
}


# Flags whose values are secrets: masked wherever the command line is shown.
SECRET_FLAGS = ("etcd.password",)
MASK = "<hidden>"


def mask_secrets(argv: Sequence[str]) -> List[str]:
    """The command line with the values of SECRET_FLAGS replaced by MASK.

    Handles ``-flag=value``, ``--flag=value`` and ``-flag value``."""
    out: List[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        name, sep, _value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in SECRET_FLAGS:
            if sep:
                arg = arg[: len(arg) - len(_value)] + MASK
            else:
                hide_next = True
        out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="networkd",
        description="networkd: VIPs, DNS, resolv.conf, NAT and ACL of a LAIN node, from etcd",
        allow_abbrev=False,
    )
    defaults = Config()
    for flag, (field, kind, help_text) in FLAGS.items():
        names = [f"-{flag}", f"--{flag}"]
        default = getattr(defaults, field)
        if kind == "bool":
            parser.add_argument(
                *names,
                dest=field,
                nargs="?",
                const=True,
                default=default,
                type=_parse_bool,
                help=help_text,
            )
        elif kind == "list":
            shown = ",".join(default)
            parser.add_argument(
                *names, dest=field, default=shown, help=f"{help_text} (default {shown!r})"
            )
        else:
            conv = {"str": str, "int": int, "float": float}[kind]
            parser.add_argument(
                *names,
                dest=field,
                type=conv,
                default=default,
                help=f"{help_text} (default {default!r})",
            )  # type: ignore[arg-type]
    parser.add_argument(
        "-version", "--version", action="store_true", help="print the version and exit"
    )
    return parser


def parse_args(argv: Sequence[str]) -> Tuple[Optional[Config], bool]:
    """Parse flags (plus the -config file's, command line winning). Returns (config, version)."""
    parser = build_parser()
    ns = parser.parse_args(list(argv))
    if ns.version:
        return None, True
    if ns.config_file:
        file_args = read_flag_file(ns.config_file)
        ns = parser.parse_args(file_args + list(argv))
    return config_from_namespace(ns), False


def read_flag_file(path: str) -> List[str]:
    """A flag file holds flags as on the command line; ``#`` starts a comment."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"-config: cannot read {path}: {exc.strerror}") from None
    return shlex.split(text, comments=True)


def config_from_namespace(ns: argparse.Namespace) -> Config:
    values = {}
    for _flag, (field, kind, _help) in FLAGS.items():
        value = getattr(ns, field)
        if kind == "list":
            value = tuple(part.strip() for part in str(value).split(",") if part.strip())
        values[field] = value
    config = Config(**values)
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.vip_fencing not in FENCING_POLICIES:
        raise ConfigError(f"-vip.fencing: expected hold or strict, got {config.vip_fencing!r}")
    if config.dns_replicas < 1 or config.dns_replicas > 64:
        raise ConfigError(f"-dns.replicas: expected 1..64, got {config.dns_replicas}")
    if not 1 <= config.dns_cache_size <= 65536:
        raise ConfigError(f"-dns.cache-size: expected 1..65536 MiB, got {config.dns_cache_size}")
    if config.vip_ttl < 1:
        raise ConfigError(f"-vip.ttl: expected at least 1 second, got {config.vip_ttl}")
    if config.vip_notify and not config.vip_notify.startswith("/"):
        raise ConfigError(f"-vip.notify: expected an absolute path, got {config.vip_notify!r}")
    if not 0 < config.vip_notify_timeout <= 3600:
        raise ConfigError(
            f"-vip.notify.timeout: expected 0..3600 seconds, got {config.vip_notify_timeout}"
        )
    if not config.etcd_endpoints:
        raise ConfigError("-etcd.endpoint: at least one endpoint is needed")
    for endpoint in config.etcd_endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"-etcd.endpoint: {endpoint!r} must start with http:// or https://")
        split_host_port(endpoint.split("://", 1)[1].rstrip("/"), "-etcd.endpoint")
    if config.netplugin_ttl < 1:
        raise ConfigError(f"-netplugin.ttl: expected at least 1 second, got {config.netplugin_ttl}")
    if config.netplugin_grace < 1:
        raise ConfigError(
            f"-netplugin.grace: expected at least 1 second, got {config.netplugin_grace}"
        )
    if config.libnetwork and config.netplugin_user in (config.user, config.dns_user):
        raise ConfigError(
            "-netplugin.user: the plugin worker parses Docker's requests and needs a user of "
            f"its own, not {config.netplugin_user!r}"
        )
    if not config.docker_plugin_socket.startswith("/"):
        raise ConfigError(
            f"-docker.plugin.socket: expected an absolute path, got {config.docker_plugin_socket!r}"
        )
    config.dns_host_port  # noqa: B018 - raises ConfigError on a bad value
    config.api_host_port  # noqa: B018


def version_line() -> str:
    return f"networkd Version: {__version__}"
