//! The client address: the TCP peer, or, when the peer is a trusted proxy
//! (`server.trusted_proxies`), the right-most address in `X-Forwarded-For`
//! that is not one. Rollout bucketing and the per-client limits use it; it
//! is never stored, and logged only as a prefix ([`crate::privacy`]).

use hyper::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client behind a request from `peer` with `headers`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    // By default no proxy is trusted: then the header lookup is not worth its cost.
    if trusted.is_empty() {
        return peer;
    }
    // Several headers count as one list, in order (RFC 9110 5.3).
    let mut xff = String::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        match v.to_str() {
            Ok(v) => {
                if !xff.is_empty() {
                    xff.push(',');
                }
                xff.push_str(v);
            }
            Err(_) => return resolve_forwarded(peer, Some("garbled"), trusted),
        }
    }
    resolve_forwarded(peer, (!xff.is_empty()).then_some(xff.as_str()), trusted)
}

/// [`resolve`] given the header's value.
pub fn resolve_forwarded(peer: IpAddr, xff: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(xff) = xff else { return peer };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break, // A forged or garbled hop: stop at the last good one.
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let r = |p, x| resolve_forwarded(p, x, &trusted);
        assert_eq!(r(outsider, Some("1.2.3.4")), outsider);
        assert_eq!(
            r(peer, Some("1.2.3.4")),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // A client-supplied left-most hop is ignored: the proxy appended the real one.
        assert_eq!(
            r(peer, Some("6.6.6.6, 1.2.3.4, 10.2.2.2")),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r(peer, Some("garbage")), peer);
        assert_eq!(r(peer, None), peer);
    }

    #[test]
    fn repeated_headers_are_one_list() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "6.6.6.6".parse().unwrap());
        h.append(X_FORWARDED_FOR, "1.2.3.4, 10.9.9.9".parse().unwrap());
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            resolve(peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, &h, &[]), peer, "no trusted proxy: the peer");
    }
}
