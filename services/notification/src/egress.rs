//! Where a webhook may connect, and how its URL may be shown.
//!
//! The webhook URL is configuration, but its host is resolved at every send: a DNS answer must
//! not turn the notifier into a probe of the cluster network or of a cloud metadata service.
//! So by default only public addresses are dialled — loopback, private, link-local (where the
//! metadata services live), shared (CGNAT), benchmarking, reserved, unique-local, site-local
//! and unspecified addresses are refused, and so are IPv6 addresses that carry an IPv4 one
//! (mapped, compatible, NAT64, 6to4) unless that one is public, and tunnels (Teredo) — for
//! names at resolution time and for IP literals when the webhook is set up. No proxy from the
//! environment is used: it would dial past this policy.
//! `WEBHOOK_ALLOW_PRIVATE=true` lifts that for deployments whose receiver is internal.
//!
//! A webhook URL may carry a token in its path, query or user info, so it is shown only
//! [`redacted`]: scheme, host and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    let this_network = a == 0;
    // 100.64.0.0/10: carrier-grade NAT, private in all but name.
    let shared = a == 100 && (64..128).contains(&b);
    // 192.0.0.0/24: IETF protocol assignments; 192.88.99.0/24: the old 6to4 relay anycast.
    let protocol = a == 192 && ((b == 0 && c == 0) || (b == 88 && c == 99));
    // 198.18.0.0/15: benchmarking networks, routed inside labs and appliances.
    let benchmarking = a == 198 && (b == 18 || b == 19);
    // 240.0.0.0/4: reserved (and the broadcast address).
    let reserved = a >= 240;
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_documentation()
        || this_network
        || shared
        || protocol
        || benchmarking
        || reserved)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // Addresses that carry an IPv4 address and reach it: judged by that address (mapped
    // `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` — with `::` and `::1` among them —, NAT64's
    // `64:ff9b::/96` and 6to4's `2002::/16`).
    let embedded = match s {
        [0, 0, 0, 0, 0, 0xffff, high, low] | [0, 0, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        [0x2002, high, low, ..] => Some(v4(high, low)),
        _ => None,
    };
    if let Some(v4) = embedded {
        return is_public_v4(v4);
    }
    // 64:ff9b:1::/48: NAT64 for a network's own use.
    let local_nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1;
    // fec0::/10: site-local (deprecated, still routed inside some networks).
    let site_local = s[0] & 0xffc0 == 0xfec0;
    // 2001::/32: Teredo, a tunnel to an obfuscated IPv4 address.
    let teredo = s[0] == 0x2001 && s[1] == 0;
    let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
    // 100::/64: discard-only.
    let discard = s[..4] == [0x100, 0, 0, 0];
    !(v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || v6.is_unique_local()
        || v6.is_unicast_link_local()
        || local_nat64
        || site_local
        || teredo
        || documentation
        || discard)
}

/// The URL as it may appear in logs, spans, records and errors: `scheme://host:port`, with
/// `/…` where a path or query was left out.
pub fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        ""
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

/// A DNS resolver that drops every address the policy refuses; a name left with none fails to
/// resolve, so the request fails before a connection is made.
#[derive(Debug, Clone, Copy)]
pub struct Egress {
    /// Private, loopback and link-local addresses are allowed too.
    pub allow_private: bool,
    /// Plain `http://` URLs are allowed too.
    pub allow_http: bool,
}

impl Egress {
    /// Whether the policy lets a connection to `ip` through.
    pub fn allows(self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

impl Resolve for Egress {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = *self;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved.filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses webhooks may not reach \
                     (private, loopback or link-local; WEBHOOK_ALLOW_PRIVATE=true allows them)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_and_metadata_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // IPv4 carried in IPv6: NAT64, IPv4-compatible, 6to4.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101::1",
            "64:ff9b:1::1",
            "fec0::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "100::1",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
        ] {
            assert!(!is_public(ip(internal)), "{internal} counted as public");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "100.128.0.1",
            // A public IPv4 address reached over NAT64 or 6to4 is public.
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_public(ip(public)), "{public} counted as internal");
        }
    }

    #[test]
    fn a_redacted_url_keeps_scheme_host_and_port_only() {
        let url = Url::parse("https://user:pw@hooks.example.com:8443/t/s3cr3t?key=abc").unwrap();
        assert_eq!(redacted(&url), "https://hooks.example.com:8443/…");
        let bare = Url::parse("http://hooks.example.com/").unwrap();
        assert_eq!(redacted(&bare), "http://hooks.example.com");
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_is_refused_unless_private_is_allowed() {
        let name: Name = "localhost".parse().unwrap();
        let refused = Egress {
            allow_private: false,
            allow_http: false,
        }
        .resolve(name)
        .await;
        assert!(refused.is_err());
        let name: Name = "localhost".parse().unwrap();
        let allowed = Egress {
            allow_private: true,
            allow_http: false,
        }
        .resolve(name)
        .await;
        assert!(allowed.is_ok_and(|mut addrs| addrs.next().is_some()));
    }
}
