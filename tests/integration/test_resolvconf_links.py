"""A symlinked resolv.conf stays a symlink: the keeper writes the link's target.

Two styles, each in a throwaway tree standing in for / (the path is -resolv.conf):
systemd-resolved's relative link to its stub file, which it rewrites by rename, and
NetworkManager's ``rc-manager=symlink``, an absolute link to a file it rewrites in place.
"""

import os
from typing import Any

import pytest

from tests.support.daemon import Daemon, wait_for

STYLES = {
    # name: (link target as written in the link, target path under the root, edit by rename)
    "systemd-resolved": (
        "../run/systemd/resolve/stub-resolv.conf",
        "run/systemd/resolve/stub-resolv.conf",
        True,
    ),
    "NetworkManager": (None, "var/run/NetworkManager/resolv.conf", False),
}


def write(path: str, text: str, by_rename: bool) -> None:
    if by_rename:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_symlinked_resolv_conf_survives_start_edits_and_stop(tmp_path: Any, style: str) -> None:
    written_link, target_rel, by_rename = STYLES[style]
    root = str(tmp_path)
    target = os.path.join(root, target_rel)
    link = os.path.join(root, "etc", "resolv.conf")
    link_text = written_link or target  # NetworkManager: an absolute link
    os.makedirs(os.path.dirname(target))
    os.makedirs(os.path.dirname(link))
    write(target, "# managed by the host\nnameserver 10.0.0.53\nsearch example\n", False)
    os.symlink(link_text, link)
    daemon = Daemon(os.path.join(root, "d"), workers=("resolvconf",), flags={"resolv.conf": link})
    daemon.start()
    try:
        daemon.wait_running(["resolvconf"], timeout=20)

        def upstreams() -> Any:
            daemon.view().poll(30)
            items = daemon.view().mirror("resolvconf", "state.upstreams") or {}
            item = items.get("upstreams")
            return item.servers if item is not None else None

        # start: the target points at us; the link is untouched
        wait_for(lambda: read(target).startswith("nameserver 127.0.0.1\n"), 5, what="written")
        assert read(target) == (
            "nameserver 127.0.0.1\n# managed by the host\nnameserver 10.0.0.53\nsearch example\n"
        )
        assert os.path.islink(link) and os.readlink(link) == link_text
        wait_for(lambda: upstreams() == ["10.0.0.53"], 5, what="upstreams published")

        # an outside edit (the resolver manager rewrites its file): fixed within a second
        write(target, "nameserver 10.1.1.1\n", by_rename)
        wait_for(
            lambda: read(target) == "nameserver 127.0.0.1\nnameserver 10.1.1.1\n",
            2,
            what="edit fixed",
        )
        assert os.path.islink(link) and os.readlink(link) == link_text
        wait_for(lambda: upstreams() == ["10.1.1.1"], 5, what="new upstreams published")

        # stop: the target gets the upstream-only content; the link is still the link
        assert daemon.stop() == 0
        assert os.path.islink(link) and os.readlink(link) == link_text
        assert read(target) == "nameserver 10.1.1.1\n"
        leftovers = [
            name
            for d in (os.path.dirname(link), os.path.dirname(target))
            for name in os.listdir(d)
            if name.startswith(".networkd-")
        ]
        assert leftovers == []
    finally:
        daemon.close()
