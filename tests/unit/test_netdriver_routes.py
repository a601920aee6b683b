"""Route and link planning of container networks (pure, no root)."""

from networkd.netdriver.forward_rules import ForwardRule, plan_forward
from networkd.netdriver.routes import (
    KIND_LOCAL,
    KIND_REMOTE,
    KIND_UNREACHABLE,
    LocalEndpoint,
    RemoteBlock,
    Route,
    desired_routes,
    endpoint_of_link,
    link_name,
    plan_routes,
    stale_links,
)

EP1 = "0123456789ab" + "c" * 52
EP2 = "fedcba987654" + "d" * 52
ME = "10.77.0.11"


def test_link_names_fit_the_kernel_and_map_back_to_the_endpoint() -> None:
    assert link_name("nr", EP1) == "nr0123456789ab"
    assert len(link_name("nc", EP1)) <= 15
    assert endpoint_of_link("nm0123456789ab") == "0123456789ab"
    for other in ("eth0", "nr0123", "nrXYZ456789abc", "docker0", "nx0123456789ab"):
        assert endpoint_of_link(other) == ""


def test_desired_routes() -> None:
    endpoints = [
        LocalEndpoint(EP1, "10.50.0.2", routed=True),
        LocalEndpoint(EP2, "10.50.0.3", routed=True),  # its veth is gone: no route
        LocalEndpoint("9" * 64, "10.51.0.2", routed=False),  # macvlan: no host route
    ]
    remote = [
        RemoteBlock("10.50.0.64/26", "10.77.0.12"),
        RemoteBlock("10.50.0.128/26", ""),  # its host's route key is gone (lease expired)
        RemoteBlock("10.50.0.192/26", ME),  # through ourselves: never
    ]
    routes = desired_routes(endpoints, {"nr0123456789ab"}, ["10.50.0.0/26"], remote, ME)
    assert routes == {
        "10.50.0.0/26": Route("10.50.0.0/26", KIND_UNREACHABLE),
        "10.50.0.2/32": Route("10.50.0.2/32", KIND_LOCAL, dev="nr0123456789ab"),
        "10.50.0.64/26": Route("10.50.0.64/26", KIND_REMOTE, via="10.77.0.12"),
    }


def test_plan_routes_adds_replaces_and_removes_only_what_differs() -> None:
    keep = Route("10.50.0.0/26", KIND_UNREACHABLE)
    moved_old = Route("10.50.0.64/26", KIND_REMOTE, via="10.77.0.12")
    moved_new = Route("10.50.0.64/26", KIND_REMOTE, via="10.77.0.13")
    gone = Route("10.50.0.128/26", KIND_REMOTE, via="10.77.0.14")
    new = Route("10.50.0.2/32", KIND_LOCAL, dev="nr0123456789ab")
    plan = plan_routes(
        {r.dst: r for r in (keep, moved_new, new)}, {r.dst: r for r in (keep, moved_old, gone)}
    )
    assert plan.add == (new,)
    assert plan.replace == (moved_new,)
    assert plan.remove == (gone,)
    assert plan.changes == 3
    assert plan_routes({keep.dst: keep}, {keep.dst: keep}).empty


def test_stale_links_spare_known_and_protected_endpoints() -> None:
    present = ["nr0123456789ab", "ncfedcba987654", "nm111111111111", "eth0", "nrdeadbeef0000"]
    assert stale_links(present, [EP1], protected=["fedcba987654"]) == [
        "nm111111111111",
        "nrdeadbeef0000",
    ]


def test_forward_rules_accept_both_directions_of_every_routed_subnet() -> None:
    assert plan_forward(["10.51.0.0/16", "10.50.0.0/16", "10.50.0.0/16"]) == [
        ForwardRule(src="10.50.0.0/16"),
        ForwardRule(dst="10.50.0.0/16"),
        ForwardRule(src="10.51.0.0/16"),
        ForwardRule(dst="10.51.0.0/16"),
    ]
    assert plan_forward([]) == []
