//! Where a webhook may connect, and how its URL may be shown.
//!
//! The webhook URL is configuration, but its host is resolved at every send: a DNS answer must
//! not turn the notifier into a probe of the cluster network or of a cloud metadata service.
//! So by default only public addresses are dialled — loopback, private, link-local (where the
//! metadata services live), shared (CGNAT), unique-local and unspecified addresses are
//! refused, for names at resolution time and for IP literals when the webhook is set up.
//! `WEBHOOK_ALLOW_PRIVATE=true` lifts that for deployments whose receiver is internal.
//!
//! A webhook URL may carry a token in its path, query or user info, so it is shown only
//! [`redacted`]: scheme, host and port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    let this_network = a == 0;
    // 100.64.0.0/10: carrier-grade NAT, private in all but name.
    let shared = a == 100 && (64..128).contains(&b);
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || this_network
        || shared)
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
        }
        .resolve(name)
        .await;
        assert!(refused.is_err());
        let name: Name = "localhost".parse().unwrap();
        let allowed = Egress {
            allow_private: true,
        }
        .resolve(name)
        .await;
        assert!(allowed.is_ok_and(|mut addrs| addrs.next().is_some()));
    }
}
