//! Which request headers reach Mithril.
//!
//! The caller's headers pass, except:
//! - hop-by-hop headers (RFC 9110 section 7.6.1) and every header the
//!   `Connection` header names: they describe the caller's connection, not
//!   ours;
//! - identity headers (`x-consumer-*`, `x-mis-client-id`): Mithril and the
//!   services behind eHealth's gateway trust them, so only the gateway
//!   sets them, from the verified token;
//! - forwarding headers (`x-forwarded-*`, `forwarded`, `x-real-ip`), unless
//!   the caller's address is a configured trusted proxy;
//! - names with `_`, which some servers read as `-` (`x_consumer_id`), and
//!   method or path overrides (`x-http-method-override`, `x-original-url`);
//! - credentials and what the client sets itself (`authorization`,
//!   `api-key`, `cookie`, `host`, `content-length`, `accept`,
//!   `accept-encoding`, `x-request-id`).
//!
//! Then the gateway adds exactly the credentials it verified, the identity
//! headers as eHealth's gateway sets them, the request id and the caller's
//! address in `x-forwarded-for`.
//!
//! Answers are never passed on, so no upstream header reaches a caller.

use std::net::IpAddr;

use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, HeaderMap,
    HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;

use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::token::{Credentials, Principal};

/// Hop-by-hop headers `http` has no constant for.
const HOP_BY_HOP: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Headers some frameworks read as another method or path than the
/// request's: what was decided is a GET of one path, and only that goes.
const OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Forwarding headers besides the `x-forwarded-*` family.
const FORWARDING: [&str; 2] = ["forwarded", "x-real-ip"];

/// Headers Mithril's side trusts to say who is calling.
pub const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub const X_CONSUMER_METADATA: HeaderName = HeaderName::from_static("x-consumer-metadata");
pub const X_CONSUMER_SCOPE: HeaderName = HeaderName::from_static("x-consumer-scope");
pub const X_MIS_CLIENT_ID: HeaderName = HeaderName::from_static("x-mis-client-id");
const API_KEY: HeaderName = HeaderName::from_static("api-key");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Addresses whose forwarding headers are believed: the load balancer or
/// ingress in front of the gateway.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }
}

/// Who the request is for, as the gateway verified it.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub principal: &'a Principal,
    pub credentials: &'a Credentials,
    pub request_id: &'a RequestId,
}

/// The headers to send upstream for a caller's request.
pub fn forwarded(
    caller: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &TrustedProxies,
    identity: Identity<'_>,
) -> HeaderMap {
    let trusted_peer = peer.is_some_and(|ip| trusted.contains(ip));
    let named = named_by_connection(caller);
    let mut headers = HeaderMap::with_capacity(caller.len() + 6);
    for (name, value) in caller {
        // Some servers read `_` as `-`: `x_consumer_id` must not pass as
        // an identity header, so no name with `_` passes (as in nginx).
        let passes = !is_hop_by_hop(name)
            && !name.as_str().contains('_')
            && !OVERRIDES.contains(&name.as_str())
            && !named.contains(name)
            && !is_identity(name)
            && !is_set_by_gateway(name)
            && (trusted_peer || !is_forwarding(name));
        if passes {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(ip) = peer {
        headers.insert(X_FORWARDED_FOR, forwarded_for(caller, ip, trusted_peer));
    }
    set_identity(&mut headers, identity);
    headers
}

fn set_identity(headers: &mut HeaderMap, identity: Identity<'_>) {
    let Identity {
        principal,
        credentials,
        request_id,
    } = identity;
    // The b64token and api-key checks admit only visible ASCII, so these
    // values always make headers; a failure would drop, never pass, one.
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", credentials.token.expose())) {
        headers.insert(AUTHORIZATION, sensitive(value));
    }
    if let Some(key) = &credentials.api_key
        && let Ok(value) = HeaderValue::from_str(key.expose())
    {
        headers.insert(API_KEY, sensitive(value));
    }
    headers.insert(X_REQUEST_ID, request_id.header_value());
    if let Some(user) = principal.user_id {
        insert(headers, X_CONSUMER_ID, &user.to_string());
    }
    let metadata = serde_json::json!({
        "client_id": principal.client_id,
        "client_type": principal.client_type,
    });
    insert(headers, X_CONSUMER_METADATA, &metadata.to_string());
    let scopes: Vec<&str> = principal.effective_scopes().collect();
    insert(headers, X_CONSUMER_SCOPE, &scopes.join(" "));
    if let Some(mis) = principal.broker.as_ref().and_then(|b| b.client_id) {
        insert(headers, X_MIS_CLIENT_ID, &mis.to_string());
    }
}

/// Values from Mithril's data (a client type name) may hold bytes a
/// header cannot; such a header is left out rather than mangled.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::warn!(header = %name, "value cannot be sent as a header; left out"),
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// A trusted proxy's chain with the proxy appended; otherwise the caller
/// alone.
fn forwarded_for(caller: &HeaderMap, peer: IpAddr, trusted_peer: bool) -> HeaderValue {
    let peer = peer.to_canonical().to_string();
    let chain = trusted_peer
        .then(|| {
            let earlier: Vec<&str> = caller
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!earlier.is_empty()).then(|| format!("{}, {peer}", earlier.join(", ")))
        })
        .flatten()
        .unwrap_or(peer);
    HeaderValue::from_str(&chain).unwrap_or(HeaderValue::from_static("unknown"))
}

fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ]
    .contains(name)
        || HOP_BY_HOP.contains(&name.as_str())
}

fn is_identity(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-consumer-") || name == X_MIS_CLIENT_ID
}

fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || FORWARDING.contains(&name)
}

fn is_set_by_gateway(name: &HeaderName) -> bool {
    [
        AUTHORIZATION,
        API_KEY,
        COOKIE,
        HOST,
        CONTENT_LENGTH,
        ACCEPT,
        ACCEPT_ENCODING,
        X_REQUEST_ID,
        X_FORWARDED_FOR,
    ]
    .contains(name)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::secret::Secret;
    use crate::token::{Broker, Scopes};

    fn caller(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn principal(broker: bool) -> Principal {
        Principal {
            client_id: Uuid::from_u128(1),
            client_type: "MSP".into(),
            scopes: Scopes::parse("connection:read connection:write"),
            user_id: Some(Uuid::from_u128(2)),
            broker: broker.then(|| Broker {
                client_id: Some(Uuid::from_u128(3)),
                scopes: Scopes::parse("connection:read"),
            }),
        }
    }

    fn send(pairs: &[(&str, &str)], peer: &str, trusted: &[&str], broker: bool) -> HeaderMap {
        let principal = principal(broker);
        let credentials = Credentials {
            token: Secret::new("tok"),
            api_key: broker.then(|| Secret::new("key")),
        };
        let request_id = RequestId::from_headers(&caller(&[("x-request-id", "req-1")]));
        let trusted = TrustedProxies::new(trusted.iter().map(|n| n.parse().unwrap()).collect());
        forwarded(
            &caller(pairs),
            Some(peer.parse().unwrap()),
            &trusted,
            Identity {
                principal: &principal,
                credentials: &credentials,
                request_id: &request_id,
            },
        )
    }

    fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let sent = send(
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "Basic eA=="),
                ("user-agent", "mis/1.0"),
            ],
            "10.0.0.9",
            &[],
            false,
        );
        for name in [
            "connection",
            "x-hop",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(sent.get(name).is_none(), "{name} passed");
        }
        assert_eq!(all(&sent, "user-agent"), ["mis/1.0"]);
    }

    #[test]
    fn look_alikes_and_overrides_are_dropped() {
        let sent = send(
            &[
                ("x_consumer_id", "evil"),
                ("x-consumer_id", "evil"),
                ("x-forwarded_for", "6.6.6.6"),
                ("x-http-method-override", "DELETE"),
                ("x-original-url", "/admin/clients"),
                ("x-rewrite-url", "/admin/clients"),
                ("user-agent", "mis/1.0"),
            ],
            "10.0.0.9",
            &[],
            false,
        );
        for name in [
            "x_consumer_id",
            "x-consumer_id",
            "x-forwarded_for",
            "x-http-method-override",
            "x-original-url",
            "x-rewrite-url",
        ] {
            assert!(sent.get(name).is_none(), "{name} passed");
        }
        assert_eq!(all(&sent, "user-agent"), ["mis/1.0"]);
    }

    #[test]
    fn identity_comes_from_the_verified_principal_only() {
        let sent = send(
            &[
                ("x-consumer-id", "spoofed"),
                ("x-consumer-metadata", "{\"client_id\":\"spoofed\"}"),
                ("x-consumer-scope", "connection:delete"),
                ("x-consumer-custom-id", "spoofed"),
                ("x-mis-client-id", "spoofed"),
                ("authorization", "Bearer other"),
                ("api-key", "other"),
                ("x-request-id", "other"),
            ],
            "10.0.0.9",
            &[],
            true,
        );
        assert_eq!(
            all(&sent, "x-consumer-id"),
            [Uuid::from_u128(2).to_string()]
        );
        let metadata: serde_json::Value =
            serde_json::from_str(&all(&sent, "x-consumer-metadata")[0]).unwrap();
        assert_eq!(
            metadata,
            serde_json::json!({"client_id": Uuid::from_u128(1), "client_type": "MSP"})
        );
        assert_eq!(all(&sent, "x-consumer-scope"), ["connection:read"]);
        assert!(sent.get("x-consumer-custom-id").is_none());
        assert_eq!(
            all(&sent, "x-mis-client-id"),
            [Uuid::from_u128(3).to_string()]
        );
        assert_eq!(all(&sent, "authorization"), ["Bearer tok"]);
        assert_eq!(all(&sent, "api-key"), ["key"]);
        assert_eq!(all(&sent, "x-request-id"), ["req-1"]);
        assert!(format!("{sent:?}").contains("Sensitive"));
        assert!(!format!("{sent:?}").contains("tok"));
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let spoof = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ];
        let direct = send(&spoof, "10.0.0.9", &["10.1.0.0/16"], false);
        assert_eq!(all(&direct, "x-forwarded-for"), ["10.0.0.9"]);
        for name in ["x-forwarded-host", "forwarded", "x-real-ip"] {
            assert!(direct.get(name).is_none(), "{name} passed");
        }
        let proxied = send(&spoof, "10.1.2.3", &["10.1.0.0/16"], false);
        assert_eq!(all(&proxied, "x-forwarded-for"), ["6.6.6.6, 10.1.2.3"]);
        assert_eq!(all(&proxied, "x-forwarded-host"), ["evil.test"]);
        assert!(proxied.get("x-consumer-id").is_some());
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let trusted = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(trusted.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!trusted.contains("::1".parse().unwrap()));
    }
}
