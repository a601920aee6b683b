"""What Docker's API says about networks on this host; the one reader of those answers.

Used by the netstore's reconciliation (``reconcile.plan_reclaim``). Docker's answers are
outside input: every field is checked here, and an answer that does not validate makes
the whole view unavailable (``DockerUnavailable``), so that nothing is reclaimed on a
partial picture.
"""

import ipaddress
import json
from typing import Any, Dict, List

from networkd.election.eligibility import unix_http_get
from networkd.netdriver.reconcile import IPAM_DRIVER, DockerNetwork
from networkd.netdriver.records import RecordError, check_docker_id

TIMEOUT = 5.0


class DockerUnavailable(RuntimeError):
    """Docker did not answer, or answered something this module cannot trust."""


def socket_path(endpoint: str) -> str:
    """``unix:///var/run/docker.sock`` -> the path; "" for any other scheme."""
    return endpoint[len("unix://") :] if endpoint.startswith("unix://") else ""


def _get(path: str, url: str, timeout: float) -> Any:
    try:
        status, body = unix_http_get(path, url, timeout)
    except OSError as exc:
        raise DockerUnavailable(f"docker socket {path}: {exc}") from None
    if status != 200:
        raise DockerUnavailable(f"docker GET {url}: HTTP {status}")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DockerUnavailable(f"docker GET {url}: not JSON ({exc})") from None


def _subnets(item: Dict[str, Any]) -> List[str]:
    ipam = item.get("IPAM") or {}
    configs = ipam.get("Config") or [] if isinstance(ipam, dict) else []
    out = []
    for config in configs if isinstance(configs, list) else []:
        subnet = config.get("Subnet") if isinstance(config, dict) else None
        if isinstance(subnet, str):
            try:
                out.append(str(ipaddress.ip_network(subnet, strict=False)))
            except ValueError:
                continue
    return out


def _endpoints(detail: Dict[str, Any]) -> Dict[str, str]:
    containers = detail.get("Containers") or {}
    if not isinstance(containers, dict):
        raise DockerUnavailable("docker network: Containers is not an object")
    out = {}
    for info in containers.values():
        if not isinstance(info, dict):
            raise DockerUnavailable("docker network: a container entry is not an object")
        endpoint = info.get("EndpointID")
        address = info.get("IPv4Address") or ""
        try:
            check_docker_id(endpoint, "EndpointID")
            ip = str(ipaddress.IPv4Interface(address).ip) if address else ""
        except (RecordError, ValueError) as exc:
            raise DockerUnavailable(f"docker network: {exc}") from None
        out[str(endpoint)] = ip
    return out


def networks(path: str, timeout: float = TIMEOUT) -> Dict[str, DockerNetwork]:
    """Every Docker network on this host; endpoints only for those using networkd's IPAM."""
    listing = _get(path, "/networks", timeout)
    if not isinstance(listing, list):
        raise DockerUnavailable("docker GET /networks: not a list")
    out: Dict[str, DockerNetwork] = {}
    for item in listing:
        if not isinstance(item, dict):
            raise DockerUnavailable("docker GET /networks: an entry is not an object")
        docker_id = item.get("Id")
        if not isinstance(docker_id, str) or not docker_id:
            raise DockerUnavailable("docker GET /networks: an entry has no Id")
        ipam = item.get("IPAM")
        ipam_driver = str(ipam.get("Driver") or "") if isinstance(ipam, dict) else ""
        endpoints: Dict[str, str] = {}
        if ipam_driver == IPAM_DRIVER:
            try:
                check_docker_id(docker_id, "Id")
            except RecordError as exc:
                raise DockerUnavailable(f"docker GET /networks: {exc}") from None
            detail = _get(path, f"/networks/{docker_id}", timeout)
            if not isinstance(detail, dict):
                raise DockerUnavailable(f"docker GET /networks/{docker_id[:12]}: not an object")
            endpoints = _endpoints(detail)
        out[docker_id] = DockerNetwork(
            docker_id=docker_id,
            name=str(item.get("Name") or ""),
            driver=str(item.get("Driver") or ""),
            ipam_driver=ipam_driver,
            subnets=_subnets(item),
            endpoints=endpoints,
        )
    return out
