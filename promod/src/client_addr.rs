//! Who a request comes from, for the limits keyed by client address: the
//! peer, or what trusted proxies say it is, and one bucket per address (an
//! IPv6 client per /64). Shared by the gateway's rate limits and the guard
//! on code redemptions (`code_guard.rs`).

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Parses trusted proxies: addresses or CIDR blocks.
pub fn parse_trusted(list: &[String]) -> anyhow::Result<Vec<IpNet>> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("invalid trusted proxy {s:?}: not an ip or cidr"))
        })
        .collect()
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not itself trusted.
/// Hops are read from the right only while they are trusted proxies: a hop
/// that is not an address ends the walk at the last proxy, because everything
/// left of it may be the client's own invention.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .collect();
    let mut last_proxy = peer;
    for hop in hops.into_iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => last_proxy = ip,
            Some(ip) => return ip,
            None => return last_proxy,
        }
    }
    last_proxy
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The bucket of a client address. An IPv6 client usually owns a whole /64,
/// so one bucket per address would let it rotate addresses for ever.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
    }
}

/// The bucket of a request's client: its peer, or what trusted proxies say
/// (`client_ip`), per address or IPv6 /64 (`ip_bucket`).
pub fn client_bucket(req: &Request, trusted: &[IpNet]) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    ip_bucket(client_ip(peer, req.headers(), trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_trusted_only_from_configured_proxies() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.1.1.1".parse().unwrap(),
        );
        let direct: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_ip(direct, &h, &trusted), direct, "untrusted peer");
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "right-most untrusted hop, not the spoofable left-most"
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert!(parse_trusted(&["nope".into()]).is_err());
        // A hop that is not an address stops the walk at the last proxy.
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, unknown, 10.1.1.1".parse().unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_bucket(a), ip_bucket(b));
        assert_ne!(ip_bucket(a), ip_bucket(c));
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(ip_bucket(mapped), "1.2.3.4");
    }
}
