"""The worker accounts: which are refused at start (exit 78), and what a user must read."""

import os
from typing import Dict, Tuple

import pytest

import networkd
from networkd.users import (
    Account,
    UserError,
    first_unreadable,
    import_paths,
    resolve_accounts,
)

PASSWD: Dict[str, Tuple[int, int]] = {
    "root": (0, 0),
    "networkd": (995, 995),
    "networkd-dns": (994, 994),
    "nobody": (65534, 65534),
    "alias": (995, 995),  # a second name for networkd's uid
    "grouped": (990, 995),  # its own uid, networkd's group
}


def lookup(name: str) -> Tuple[int, int]:
    return PASSWD[name]  # KeyError for a missing account, as pwd.getpwnam


def accounts(user: str, dns: str, fallback: str = "") -> Dict[str, Account]:
    return resolve_accounts({"user": user, "dns": dns}, fallback, lookup)


def test_the_packaged_accounts_pass() -> None:
    assert accounts("networkd", "networkd-dns") == {
        "user": Account("networkd", 995, 995),
        "dns": Account("networkd-dns", 994, 994),
    }


@pytest.mark.parametrize(
    "user,dns,fallback,words",
    [
        ("missing", "networkd-dns", "", ["-user:", "'missing'", "-user.fallback"]),
        ("networkd", "missing", "", ["-dns.user:", "'missing'"]),
        ("networkd", "networkd", "", ["same uid 995", "-dns.user"]),
        ("networkd", "alias", "", ["same uid 995"]),
        ("networkd", "grouped", "", ["share the primary group 995"]),
        ("root", "networkd-dns", "", ["-user:", "is root"]),
        ("networkd", "root", "", ["-dns.user:", "is root"]),
        # both fall back to the same account: the same uid
        ("missing", "missing-too", "nobody", ["same uid 65534"]),
        ("missing", "networkd-dns", "missing-too", ["-user.fallback", "'missing-too'"]),
    ],
)
def test_refused(user: str, dns: str, fallback: str, words: list) -> None:
    with pytest.raises(UserError) as err:
        accounts(user, dns, fallback)
    for word in words:
        assert word in str(err.value)


def test_fallback_only_when_asked_for() -> None:
    got = accounts("missing", "networkd-dns", fallback="nobody")
    assert got["user"] == Account("nobody", 65534, 65534)
    assert got["dns"].name == "networkd-dns"


def test_only_the_kinds_in_use_are_checked() -> None:
    assert resolve_accounts({"user": "networkd"}, "", lookup) == {
        "user": Account("networkd", 995, 995)
    }


def fake_access(denied: Dict[str, int]):
    """os.access with some (path, mode) pairs refused."""

    def access(path: str, mode: int) -> bool:
        return not any(path == p and mode & m for p, m in denied.items())

    return access


def test_first_unreadable_names_the_shallowest_path() -> None:
    paths = [
        ("/usr/lib/python3.11/asyncio/__init__.py", "asyncio"),
        ("/root/.pyenv/versions/3.11/lib/python3.11/os.py", "json"),
    ]
    denied = {"/root": os.X_OK, "/root/.pyenv": os.X_OK}
    assert first_unreadable(paths, fake_access(denied)) == ("/root", "json")


def test_first_unreadable_file_and_directory_modes(tmp_path: str) -> None:
    package = os.path.join(str(tmp_path), "pkg")
    os.mkdir(package)
    module = os.path.join(package, "__init__.py")
    open(module, "w").close()
    paths = [(package, "pkg"), (module, "pkg")]
    assert first_unreadable(paths, fake_access({})) is None
    # a directory needs read and search; a file only read
    assert first_unreadable(paths, fake_access({package: os.R_OK})) == (package, "pkg")
    assert first_unreadable(paths, fake_access({module: os.X_OK})) is None
    assert first_unreadable(paths, fake_access({module: os.R_OK})) == (module, "pkg")


def test_import_paths_cover_the_standard_library_and_networkd() -> None:
    paths = dict(import_paths())
    assert os.path.dirname(networkd.__file__) in paths
    assert any(p.endswith(os.path.join("asyncio", "__init__.py")) for p in paths)
    assert import_paths(["no_such_module_here"]) == []
