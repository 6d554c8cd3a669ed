//! [`TrustedProxies::client`] on hand-written headers.

use axum::http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn proxies(nets: &[&str], header: ClientIpHeader) -> TrustedProxies {
    TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect(), header)
}

fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_says() {
    let none = proxies(&[], XFF);
    let spoofed = headers("x-forwarded-for", &["203.0.113.9"]);
    assert_eq!(none.client(ip("127.0.0.1"), &spoofed), ip("127.0.0.1"));
    let other = proxies(&["10.0.0.0/8"], XFF);
    assert_eq!(other.client(ip("192.0.2.4"), &spoofed), ip("192.0.2.4"));
}

#[test]
fn a_trusted_peer_names_the_client() {
    let trusted = proxies(&["10.0.0.0/8"], XFF);
    let h = headers("x-forwarded-for", &["203.0.113.9"]);
    assert_eq!(trusted.client(ip("10.1.2.3"), &h), ip("203.0.113.9"));
    // no header: the proxy itself
    assert_eq!(trusted.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
}

#[test]
fn the_right_most_untrusted_hop_wins() {
    let trusted = proxies(&["10.0.0.0/8", "fd00::/8"], XFF);
    // the client prepended a fake; two trusted proxies appended theirs
    let h = headers("x-forwarded-for", &["1.1.1.1, 198.51.100.7", "10.0.0.5, fd00::1"]);
    assert_eq!(trusted.client(ip("10.9.9.9"), &h), ip("198.51.100.7"));
    // every hop trusted: the left-most of them
    let h = headers("x-forwarded-for", &["10.0.0.7, 10.0.0.5"]);
    assert_eq!(trusted.client(ip("10.9.9.9"), &h), ip("10.0.0.7"));
}

#[test]
fn an_unreadable_hop_stops_at_the_nearest_trusted_proxy() {
    let trusted = proxies(&["10.0.0.0/8"], XFF);
    let h = headers("x-forwarded-for", &["203.0.113.9, garbage, 10.0.0.5"]);
    assert_eq!(trusted.client(ip("10.9.9.9"), &h), ip("10.0.0.5"));
    let h = headers("x-forwarded-for", &["unknown"]);
    assert_eq!(trusted.client(ip("10.9.9.9"), &h), ip("10.9.9.9"));
}

#[test]
fn addresses_with_ports_brackets_and_mapped_forms() {
    for (written, expected) in [
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("\"[2001:db8::7]:443\"", "2001:db8::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
    ] {
        assert_eq!(parse_address(written), Some(ip(expected)), "{written}");
    }
    // a trusted proxy reached over IPv4-mapped IPv6 is still trusted
    let trusted = proxies(&["10.0.0.0/8"], XFF);
    let h = headers("x-forwarded-for", &["203.0.113.9"]);
    assert_eq!(trusted.client(ip("::ffff:10.0.0.1"), &h), ip("203.0.113.9"));
}

#[test]
fn forwarded_header() {
    let trusted = proxies(&["10.0.0.0/8"], ClientIpHeader::Forwarded);
    let h = headers(
        "forwarded",
        &["for=192.0.2.1;proto=https, For=\"[2001:db8:cafe::17]:4711\"", "by=10.0.0.1;for=10.0.0.3"],
    );
    assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
    // the other header is not read
    let xff = headers("x-forwarded-for", &["203.0.113.9"]);
    assert_eq!(trusted.client(ip("10.0.0.2"), &xff), ip("10.0.0.2"));
    // an obfuscated node ends the walk
    let h = headers("forwarded", &["for=192.0.2.1, for=_hidden"]);
    assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
}

#[test]
fn long_chains_are_read_only_so_far() {
    let trusted = proxies(&["10.0.0.0/8"], XFF);
    let mut chain: Vec<String> = vec!["203.0.113.9".to_owned()];
    chain.extend((0..100).map(|n| format!("10.0.{}.{}", n / 256, n % 256)));
    let h = headers("x-forwarded-for", &[chain.join(", ").as_str()]);
    let client = trusted.client(ip("10.9.9.9"), &h);
    assert!(trusted.trusts(client), "the walk stops after {MAX_HOPS} hops: {client}");
}

proptest! {
    /// Whatever the header says, the client is the peer or an address written in it, and an
    /// untrusted peer is always the client.
    #[test]
    fn the_client_is_the_peer_or_a_written_hop(value in "[0-9a-f.:, \\[\\]\"=;_]{0,80}", last in 0u8..4) {
        let Ok(header) = HeaderValue::from_str(&value) else { return Ok(()) };
        let mut map = HeaderMap::new();
        map.insert("x-forwarded-for", header);
        let trusted = proxies(&["10.0.0.0/8"], XFF);
        let peer = IpAddr::from([10, 0, 0, last]);
        let client = trusted.client(peer, &map);
        let written: Vec<IpAddr> = value.split(',').filter_map(parse_address).collect();
        prop_assert!(client == peer || written.contains(&client), "{client} from {value:?}");
        let outsider = IpAddr::from([192, 0, 2, last]);
        prop_assert_eq!(trusted.client(outsider, &map), outsider);
    }
}
