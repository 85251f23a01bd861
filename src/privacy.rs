//! The privacy promise in code: app traffic (checks, downloads, reports,
//! push) leaves no client address or prefix anywhere, logs included. The
//! one exception is the admin surface: repeated failed sign-ins are logged
//! with the /24 (IPv4) or /48 (IPv6) they come from, for the operator.

use std::net::IpAddr;

/// Displays a client address as its /24 (IPv4) or /48 (IPv6) prefix;
/// formats only when written, so a log line that is filtered out costs
/// nothing.
#[derive(Clone, Copy)]
pub struct IpPrefix(pub IpAddr);

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                write!(f, "{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                write!(f, "{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn prefix(ip: std::net::IpAddr) -> String {
        super::IpPrefix(ip).to_string()
    }

    #[test]
    fn prefixes_drop_the_host() {
        assert_eq!(prefix("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(
            prefix("2001:db8:aa:bb::1".parse().unwrap()),
            "2001:db8:aa::/48"
        );
        assert_eq!(prefix("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.0/24");
    }
}
