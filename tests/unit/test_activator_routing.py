"""Which revision a request reaches: headers first, then the Host forms people and Knative use."""

import pytest

from activator.routing import RevisionRouter, RouteMiss, parse_host
from autoscaler.stat import RevisionKey

ROUTER = RevisionRouter(
    [
        RevisionKey("default", "hello-00001"),
        RevisionKey("ml", "predictor-00001"),
        RevisionKey("a", "dup"),
        RevisionKey("b", "dup"),
    ]
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("hello-00001", ("hello-00001", None)),
        ("hello-00001:8012", ("hello-00001", None)),
        ("Hello-00001.Default", ("hello-00001", "default")),
        ("predictor-00001.ml.svc.cluster.local", ("predictor-00001", "ml")),
        ("predictor-00001.ml.svc", ("predictor-00001", "ml")),
        ("predictor-00001.ml.svc.cluster.local.", ("predictor-00001", "ml")),
        ("predictor-00001.ml.example.com", None),
        ("127.0.0.1:8012", None),
        ("[::1]:8012", None),
        ("", None),
        ("a..b", None),
    ],
    ids=[
        "short-name",
        "short-name-port",
        "mixed-case-namespace",
        "cluster-local",
        "svc",
        "cluster-local-fqdn",
        "external-domain",
        "ip-port",
        "ipv6-port",
        "empty",
        "empty-label",
    ],
)
def test_host_forms_name_a_revision_or_nothing(host, expected):
    assert parse_host(host) == expected


@pytest.mark.parametrize(
    ("host", "rev_header", "ns_header", "expected"),
    [
        ("hello-00001", None, None, RevisionKey("default", "hello-00001")),
        ("hello-00001.default:80", None, None, RevisionKey("default", "hello-00001")),
        ("predictor-00001.ml.svc.cluster.local", None, None, RevisionKey("ml", "predictor-00001")),
        ("127.0.0.1:8012", "predictor-00001", "ml", RevisionKey("ml", "predictor-00001")),
        ("127.0.0.1:8012", "hello-00001", None, RevisionKey("default", "hello-00001")),
        ("hello-00001", "predictor-00001", None, RevisionKey("ml", "predictor-00001")),  # header wins
        ("dup.b", None, None, RevisionKey("b", "dup")),
    ],
    ids=[
        "short-name",
        "name-namespace-port",
        "cluster-local",
        "headers",
        "revision-header-default-namespace",
        "header-wins-over-host",
        "dotted-name",
    ],
)
def test_route_finds_the_revision(host, rev_header, ns_header, expected):
    assert ROUTER.route(host, rev_header, ns_header) == expected


@pytest.mark.parametrize(
    ("host", "rev_header", "ns_header", "fragments"),
    [
        ("nope", None, None, ["unknown revision 'nope'", "default/hello-00001", "ml/predictor-00001"]),
        ("hello-00001.ml", None, None, ["unknown revision ml/hello-00001", "default/hello-00001"]),
        ("127.0.0.1:8012", None, None, ["does not name a revision", "Knative-Serving-Revision"]),
        ("x", "predictor-00001", "default", ["unknown revision default/predictor-00001"]),
        ("dup", None, None, ["namespaces a, b", "name the namespace"]),
        (None, None, None, ["does not name a revision"]),
    ],
    ids=["unknown-name", "unknown-in-namespace", "ip-host", "unknown-by-header", "ambiguous-name", "no-host"],
)
def test_unknown_revision_is_a_miss_listing_known_names(host, rev_header, ns_header, fragments):
    miss = ROUTER.route(host, rev_header, ns_header)
    assert isinstance(miss, RouteMiss)
    for fragment in fragments:
        assert fragment in miss.reason


def test_empty_router_says_none_configured():
    miss = RevisionRouter().route("hello")
    assert isinstance(miss, RouteMiss)
    assert "(none configured)" in miss.reason


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("web-kpa.shop.svc.cluster.local", RevisionKey("shop", "web"), id="public-service-fqdn"),
        pytest.param("web-kpa.shop", RevisionKey("shop", "web"), id="public-service-short"),
        pytest.param("web-kpa", RevisionKey("shop", "web"), id="public-service-no-namespace"),
        pytest.param("odd-kpa", RevisionKey("shop", "odd-kpa"), id="a revision named like a service wins"),
    ],
)
def test_a_host_naming_the_revisions_public_service_routes_to_the_revision(host, expected):
    router = RevisionRouter(
        [RevisionKey("shop", "web"), RevisionKey("shop", "odd-kpa"), RevisionKey("shop", "odd")]
    )
    assert router.route(host) == expected


def test_the_service_suffix_does_not_invent_revisions():
    miss = RevisionRouter([RevisionKey("shop", "web")]).route("nope-kpa.shop")
    assert isinstance(miss, RouteMiss) and "unknown revision shop/nope-kpa" in miss.reason
