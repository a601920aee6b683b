#!/usr/bin/env bash
# Installs what networkd's tests and demo need on a Debian 12 machine: the system part
# (apt packages, users) as root, the venv as any user.
# Idempotent: a second run on a prepared machine only checks and returns.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

system_setup() {
    apt_packages=(etcd-server etcd-client iptables iproute2 dnsutils dnsmasq-base dnsperf
                  bind9 bind9-utils
                  docker.io busybox-static rpm tcpdump procps psmisc python3-venv keepalived
                  openssl systemd groff-base util-linux passwd iperf3)

    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi

    # bind9 is the DNS tests' authoritative upstream, started by the tests on loopback ports:
    # the distribution's own named service must not hold port 53.
    if command -v systemctl >/dev/null && systemctl is-enabled named >/dev/null 2>&1; then
        systemctl disable --now named >/dev/null 2>&1 || true
    fi

    # python-iptables speaks to the legacy backend, like CentOS 7: make the CLI and Docker agree.
    for alt in iptables ip6tables; do
        if [ -e "/usr/sbin/${alt}-legacy" ] && [ "$(readlink -f /etc/alternatives/$alt 2>/dev/null)" != "/usr/sbin/${alt}-legacy" ]; then
            update-alternatives --set "$alt" "/usr/sbin/${alt}-legacy" >/dev/null
        fi
    done

    # The unprivileged users the daemon drops to (the RPM creates them in %pre).
    getent group networkd >/dev/null || groupadd --system networkd
    getent passwd networkd >/dev/null || useradd --system -g networkd -d / -s /sbin/nologin networkd
    getent group networkd-dns >/dev/null || groupadd --system networkd-dns
    getent passwd networkd-dns >/dev/null || useradd --system -g networkd-dns -d / -s /sbin/nologin networkd-dns
    getent group networkd-plugin >/dev/null || groupadd --system networkd-plugin
    getent passwd networkd-plugin >/dev/null || useradd --system -g networkd-plugin -d / -s /sbin/nologin networkd-plugin
}

# The system part (apt packages, iptables backend, the workers' users) needs root and
# serves the integration and lab suites. `make unit` and `make lint` need only the venv:
# as another user, the system part is skipped.
if [ "$(id -u)" -eq 0 ]; then
    system_setup
else
    echo "setup: not root: skipping apt packages and users (needed by the root-only suites)"
fi

# Debian's python3: its standard library is readable by the unprivileged workers (a
# python under /root is not, once a worker has dropped to the networkd user).
py=${PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=python3
stamp=.venv/.installed
if [ -f .venv/pyvenv.cfg ] && grep -q '^home = /root' .venv/pyvenv.cfg; then
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
