//! The origin browsers reach the gateway at (`http.public_url`): requests must name it in `Host`
//! (a DNS-rebinding page names its own host), and state-changing requests in `Origin` (CSRF).

/// `scheme://host[:port]` of `public_url`, lower-case, with the scheme's default port left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicOrigin {
    https: bool,
    host: String,
    port: Option<u16>,
}

impl PublicOrigin {
    /// Parses the scheme and authority of an `http://` or `https://` URL (path ignored).
    pub fn parse(url: &str) -> Option<PublicOrigin> {
        let (https, rest) = split_scheme(url.trim())?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (host, port) = split_authority(authority, https)?;
        Some(PublicOrigin { https, host, port })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether a `Host` header names this origin. On a loopback origin (the demo) every loopback
    /// name with the same port does: no other site can make a browser send one.
    pub fn accepts_host(&self, host: &str) -> bool {
        split_authority(host.trim(), self.https).is_some_and(|(h, p)| self.same_host(&h, p))
    }

    /// Whether an `Origin` header is this origin (or, on loopback, a loopback alias of it).
    pub fn accepts_origin(&self, origin: &str) -> bool {
        match split_scheme(origin.trim()) {
            Some((https, authority)) if https == self.https => {
                split_authority(authority, https).is_some_and(|(h, p)| self.same_host(&h, p))
            }
            _ => false,
        }
    }

    fn same_host(&self, host: &str, port: Option<u16>) -> bool {
        port == self.port && (host == self.host || is_loopback(&self.host) && is_loopback(host))
    }
}

fn split_scheme(url: &str) -> Option<(bool, &str)> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") {
        Some((true, &url[8..]))
    } else if lower.starts_with("http://") {
        Some((false, &url[7..]))
    } else {
        None
    }
}

/// `host[:port]` → (lower-case host, port unless it is the scheme's default).
fn split_authority(authority: &str, https: bool) -> Option<(String, Option<u16>)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // An IPv6 host is bracketed; the port follows the last colon after it.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(i) => {
            let (h, p) = authority.split_at(host_end + i);
            (h, Some(p[1..].parse::<u16>().ok()?))
        }
        None => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let default = if https { 443 } else { 80 };
    Some((host.to_ascii_lowercase(), port.filter(|p| *p != default)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> PublicOrigin {
        PublicOrigin::parse(url).expect(url)
    }

    #[test]
    fn hosts_must_name_the_public_origin() {
        let o = origin("https://Natter.Example/");
        assert!(o.is_https());
        for ok in ["natter.example", "NATTER.example", "natter.example:443"] {
            assert!(o.accepts_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "natter.example:8443",
            "",
            "natter.example:x",
            "127.0.0.1",
        ] {
            assert!(!o.accepts_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_loopback_origin_accepts_every_loopback_name_on_its_port() {
        let o = origin("http://127.0.0.1:8080");
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert!(o.accepts_host(ok), "{ok}");
        }
        for bad in ["127.0.0.1:8081", "rebound.example:8080", "localhost"] {
            assert!(!o.accepts_host(bad), "{bad}");
        }
        assert!(o.accepts_origin("http://localhost:8080"));
        assert!(!o.accepts_origin("https://127.0.0.1:8080"));
    }

    #[test]
    fn origins_must_match_scheme_host_and_port() {
        let o = origin("https://natter.example:8443/base");
        assert!(o.accepts_origin("https://natter.example:8443"));
        for bad in [
            "http://natter.example:8443",
            "https://natter.example",
            "https://evil.example:8443",
            "null",
            "",
        ] {
            assert!(!o.accepts_origin(bad), "{bad}");
        }
        assert_eq!(PublicOrigin::parse("ftp://x"), None);
        assert_eq!(PublicOrigin::parse("http://"), None);
        assert_eq!(PublicOrigin::parse("http://user@host"), None);
    }
}
