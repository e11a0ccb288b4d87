//! Where a session comes from: the client's address and its user agent,
//! parsed into browser and device.

use std::net::SocketAddr;

use roster_domain::SessionActivity;
use tonic::metadata::MetadataMap;

/// Longest user agent kept.
const MAX_USER_AGENT_CHARS: usize = 512;

/// How the client's address is found.
#[derive(Clone, Debug, Default)]
pub struct ClientIp {
    /// A header set by a trusted proxy in front of Roster (for example
    /// `x-forwarded-for`; its first address is the client). Without one,
    /// the peer address is the client: a header the client could set
    /// itself is never believed.
    pub trusted_header: Option<String>,
}

impl ClientIp {
    fn find(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Option<String> {
        if let Some(header) = &self.trusted_header {
            let forwarded = metadata
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Some(ip.to_string());
            }
        }
        peer.map(|p| p.ip().to_string())
    }
}

/// The request's `origin` (a browser's page origin), for a token's `azp`
/// claim: `scheme://host[:port]`, at most 256 characters; anything else is
/// ignored.
pub fn origin(metadata: &MetadataMap) -> Option<String> {
    let origin = metadata.get("origin")?.to_str().ok()?.trim();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    let valid =
        origin.len() <= 256 && !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']);
    valid.then(|| origin.to_owned())
}

/// The activity of a gRPC request (see [`of_request`]).
pub fn of<T>(client_ip: &ClientIp, request: &tonic::Request<T>) -> SessionActivity {
    of_request(client_ip, request.metadata(), request.remote_addr())
}

/// The activity of a request: its client address and user agent.
pub fn of_request(
    client_ip: &ClientIp,
    metadata: &MetadataMap,
    peer: Option<SocketAddr>,
) -> SessionActivity {
    let user_agent = metadata
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect::<String>())
        .filter(|ua| !ua.is_empty());
    let mut activity = SessionActivity {
        ip_address: client_ip.find(metadata, peer),
        ..SessionActivity::default()
    };
    if let Some(ua) = &user_agent {
        parse_user_agent(ua, &mut activity);
    }
    activity.user_agent = user_agent;
    activity
}

fn known(value: &str) -> Option<String> {
    (!value.is_empty() && value != "UNKNOWN").then(|| value.to_owned())
}

/// Fills in browser and device from a user agent.
fn parse_user_agent(ua: &str, activity: &mut SessionActivity) {
    let Some(parsed) = woothee::parser::Parser::new().parse(ua) else {
        return;
    };
    activity.browser_name = known(parsed.name);
    activity.browser_version = known(parsed.version);
    let device = match parsed.category {
        "crawler" => Some("bot"),
        // woothee has no tablet category: iPads and Android devices without
        // "Mobile" in their agent are tablets.
        "smartphone"
            if parsed.os == "iPad" || (parsed.os == "Android" && !ua.contains("Mobile")) =>
        {
            Some("tablet")
        }
        "smartphone" | "mobilephone" => Some("mobile"),
        "pc" => Some("desktop"),
        _ => None,
    };
    activity.is_mobile = matches!(device, Some("mobile" | "tablet"));
    activity.device_type = device.map(str::to_owned);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(ua: &str) -> SessionActivity {
        let mut a = SessionActivity::default();
        parse_user_agent(ua, &mut a);
        a
    }

    #[test]
    fn user_agents_become_browsers_and_devices() {
        let firefox =
            parsed("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0");
        assert_eq!(firefox.browser_name.as_deref(), Some("Firefox"));
        assert_eq!(firefox.browser_version.as_deref(), Some("120.0"));
        assert_eq!(
            (firefox.device_type.as_deref(), firefox.is_mobile),
            (Some("desktop"), false)
        );
        let iphone = parsed(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(
            (iphone.device_type.as_deref(), iphone.is_mobile),
            (Some("mobile"), true)
        );
        let ipad = parsed(
            "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(
            (ipad.device_type.as_deref(), ipad.is_mobile),
            (Some("tablet"), true)
        );
        let bot =
            parsed("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert_eq!(
            (bot.device_type.as_deref(), bot.is_mobile),
            (Some("bot"), false)
        );
        let grpc = parsed("grpc-python/1.85.1 grpc-c/50.0.0 (linux; chttp2)");
        assert_eq!((grpc.browser_name, grpc.device_type), (None, None));
    }

    #[test]
    fn origins_become_azp_only_when_well_formed() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("origin", value.parse().unwrap());
            origin(&metadata)
        };
        assert_eq!(
            with("https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            with("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        for bad in [
            "null",
            "https://",
            "https://a.example/path",
            "ftp://x",
            "https://u@h",
        ] {
            assert_eq!(with(bad), None, "{bad}");
        }
        assert_eq!(origin(&MetadataMap::new()), None);
    }

    #[test]
    fn only_a_configured_header_is_believed() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-forwarded-for", "198.51.100.4, 10.0.0.1".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let untrusted = of_request(&ClientIp::default(), &metadata, Some(peer));
        assert_eq!(untrusted.ip_address.as_deref(), Some("127.0.0.1"));
        let trusted = ClientIp {
            trusted_header: Some("x-forwarded-for".into()),
        };
        let behind_proxy = of_request(&trusted, &metadata, Some(peer));
        assert_eq!(behind_proxy.ip_address.as_deref(), Some("198.51.100.4"));
    }
}
