//! Staged rollout: a release at p% is offered to a client when
//! `siphash(release seed, client network) mod 10000 < p * 100`. Stateless and
//! deterministic per address and release; each release samples its own set.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::IpAddr;

/// The bytes that identify a client for bucketing and rate limiting: an IPv4
/// address, or an IPv6 /64 (one subscriber's network; the low 64 bits rotate).
pub fn client_key(ip: IpAddr) -> ([u8; 8], usize) {
    let mut out = [0u8; 8];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, 4)
        }
        IpAddr::V6(v6) => {
            out.copy_from_slice(&v6.octets()[..8]);
            (out, 8)
        }
    }
}

/// 0..10000, fixed for (seed, client network).
pub fn bucket(seed: u64, ip: IpAddr) -> u16 {
    let (key, len) = client_key(ip);
    let mut h = SipHasher13::new_with_keys(seed, seed.rotate_left(32) ^ 0x6669_726d_6361_7374);
    h.write(&key[..len]);
    (h.finish() % 10_000) as u16
}

pub fn in_rollout(seed: u64, rollout_bp: u16, ip: IpAddr) -> bool {
    rollout_bp >= 10_000 || bucket(seed, ip) < rollout_bp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are part of the contract across versions: during a rolling
    /// upgrade, old and new instances must put a device in the same bucket,
    /// or a 10% rollout reaches different devices depending on the instance.
    #[test]
    fn buckets_do_not_change_between_versions() {
        let got: Vec<u16> = [
            (42, "198.51.100.7"),
            (42, "198.51.100.200"),
            (7, "198.51.100.7"),
            (u64::MAX, "2001:db8:1:2::1"),
        ]
        .iter()
        .map(|(seed, ip)| bucket(*seed, ip.parse().unwrap()))
        .collect();
        assert_eq!(got, [276, 9414, 4140, 3085]);
    }

    #[test]
    fn deterministic_and_proportional() {
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(bucket(42, ip), bucket(42, ip));
        let n = 20_000u32;
        let hits = (0..n)
            .filter(|i| {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                in_rollout(7, 2_500, ip)
            })
            .count() as f64;
        let share = hits / n as f64;
        assert!((0.23..0.27).contains(&share), "25% rollout hit {share}");
        assert!(!in_rollout(7, 0, ip));
        assert!(in_rollout(7, 10_000, ip));

        // At 0% nobody, not even bucket 0; at 0.01% exactly bucket 0.
        let zero = (0..1_000_000u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .find(|ip| bucket(7, *ip) == 0)
            .expect("some address falls in bucket 0");
        assert!(!in_rollout(7, 0, zero));
        assert!(in_rollout(7, 1, zero));
    }

    #[test]
    fn each_release_samples_its_own_clients_and_raising_keeps_them() {
        let ips: Vec<IpAddr> = (0..20_000u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i * 7)))
            .collect();
        let share = |seed: u64, bp: u16| -> Vec<bool> {
            ips.iter().map(|ip| in_rollout(seed, bp, *ip)).collect()
        };
        let (a, b) = (share(11, 5_000), share(12, 5_000));
        let n = ips.len() as f64;
        let count = |v: &[bool]| v.iter().filter(|x| **x).count() as f64 / n;
        assert!((0.47..0.53).contains(&count(&a)), "{}", count(&a));
        assert!((0.47..0.53).contains(&count(&b)), "{}", count(&b));
        // Independent samples overlap by about a quarter, not a half.
        let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count() as f64 / n;
        assert!((0.22..0.28).contains(&both), "overlap {both}");
        // 30% -> 60%: everyone who had it keeps it; about as many join.
        let (low, high) = (share(11, 3_000), share(11, 6_000));
        assert!(low.iter().zip(&high).all(|(l, h)| !l || *h));
        assert!((0.57..0.63).contains(&count(&high)), "{}", count(&high));
    }

    #[test]
    fn ipv6_by_slash_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(bucket(1, mapped), bucket(1, v4));
    }
}
