//! The demo data: what `serve` answers from when no database is configured,
//! and what `db init` writes into an empty PostgreSQL database.
//!
//! Every value is fixed, so the README's `curl` lines work as written. These
//! tokens and secrets are public: never load them into a database that
//! anything real can reach.

use std::fmt::Write as _;
use std::net::SocketAddr;

use uuid::{Uuid, uuid};

use super::seed::{Client, ClientType, Connection, Rows, Token, User};

pub const ADMIN_CLIENT: Uuid = uuid!("fb954bbc-bbd6-43c0-b3f0-bf9f42172112");
pub const MIS_CLIENT: Uuid = uuid!("955534f9-488c-49a4-b209-d824fd3dd559");
pub const MSP_CLIENT: Uuid = uuid!("bf567f67-b3e5-45ec-b879-c0d9ea33ffef");
pub const PHARMACY_CLIENT: Uuid = uuid!("eca1684c-2af3-4485-bc13-f04551e739e5");
pub const BLOCKED_CLIENT: Uuid = uuid!("bdc851fa-63a3-432f-8155-4a6496397bd1");
/// A client of type `NHS`, which the shipped policies do not grant: the
/// README's example policy makes it an administrator.
pub const NHS_CLIENT: Uuid = uuid!("5c6fc6dc-619f-43b6-b9ca-61bbe58797e5");

/// The MIS's own connection; its secret is the api-key the MSP sends.
pub const MIS_CONNECTION: Uuid = uuid!("6fbfc398-c05e-488f-b922-a6ce65fb08bf");
/// The MSP's connection, used through the MIS.
pub const MSP_CONNECTION: Uuid = uuid!("9ee4614d-65d7-45f8-be63-9fdbefb2a91d");
pub const PHARMACY_CONNECTION: Uuid = uuid!("3b21e93e-fbf6-4940-a81d-fb46baa6df9c");
pub const BLOCKED_CONNECTION: Uuid = uuid!("eeef8fc0-0df4-4281-9212-de30a8122fdf");
pub const NHS_CONNECTION: Uuid = uuid!("c7519fd6-08f2-4677-8812-2eddc3c48d6e");

/// The MIS connection's secret: the `api-key` of the MSP acting through it.
pub const MIS_API_KEY: &str = "aR2OnpJE52IMGYQNh-oG8w";

pub const ADMIN_TOKEN: &str = "c76e2ab65c8248330d0eb74f2b8afb7c";
pub const MIS_TOKEN: &str = "aa90e5d2e13f6f6f8c9ebd14a1defb41";
pub const MSP_TOKEN: &str = "6d6dd55fc308db34749a90505dc52737";
pub const PHARMACY_TOKEN: &str = "8208ec13f01018db91da791a24312de8";
pub const MIS_WITHOUT_SCOPE_TOKEN: &str = "45e7b0b524b44f03b57fbb8032c96d2e";
pub const BLOCKED_TOKEN: &str = "79384c7a62b0a99a1fc806e484984333";
pub const EXPIRED_TOKEN: &str = "bb3358d61000ff6c09fa7afd257091b3";
pub const REFRESH_TOKEN: &str = "8f200cc8d9c0368de07965839510f5b2";
pub const NHS_TOKEN: &str = "b6dec7ea2ebb7f5378aab3d8ad249426";

const USER: Uuid = uuid!("34308c0a-058c-4378-8dba-6030ec4f543b");
const ADMIN_TYPE: Uuid = uuid!("09c15f04-e317-409a-8f3c-6544ae04c3ec");
const MIS_TYPE: Uuid = uuid!("de3b5405-ff9d-4d1a-9091-bdaf0816068e");
const MSP_TYPE: Uuid = uuid!("33d07b33-1c5f-49da-b274-1b00e9e6b605");
const PHARMACY_TYPE: Uuid = uuid!("cb1634be-395f-48e3-b4ca-a59f2a8f9766");
const NHS_TYPE: Uuid = uuid!("3a245a9d-6821-4762-99c0-3e573b2255f2");

/// How long the demo's valid tokens live from the moment they are written.
const VALID_FOR_SECS: i64 = 365 * 24 * 3600;

const DIRECT: &str = r#"{"access_type": "DIRECT"}"#;

/// The demo rows, with valid tokens expiring a year after `now` (unix
/// seconds) and the expired one an hour before it.
pub fn rows(now: i64) -> Rows {
    let client_type = |id, name: &str, scope: &str| ClientType {
        id,
        name: name.into(),
        scope: scope.into(),
    };
    let client = |id, name: &str, client_type_id, priv_settings: &str| Client {
        id,
        name: name.into(),
        client_type_id,
        user_id: Some(USER),
        is_blocked: false,
        priv_settings: priv_settings.into(),
    };
    let connection = |id, client_id, consumer_id, secret: &str| Connection {
        id,
        client_id,
        consumer_id,
        redirect_uri: "https://example.com/oauth/redirect".into(),
        secret: secret.into(),
    };
    let token = |name: &str, value: &str, client_id: Uuid, scope: &str, expires_at| Token {
        id: Uuid::new_v4(),
        name: name.into(),
        value: value.into(),
        expires_at,
        details: serde_json::json!({
            "client_id": client_id,
            "scope": scope,
            "grant_type": "authorization_code",
            "redirect_uri": "https://example.com/oauth/redirect",
        })
        .to_string(),
        user_id: Some(USER),
    };
    let valid = now + VALID_FOR_SECS;
    let access = "access_token";
    Rows {
        users: vec![User {
            id: USER,
            email: "demo@mithril-gate.example".into(),
            is_blocked: false,
        }],
        client_types: vec![
            client_type(
                ADMIN_TYPE,
                "Mithril ADMIN",
                "connection:read connection:write",
            ),
            client_type(MIS_TYPE, "MIS", "connection:read connection:write"),
            client_type(MSP_TYPE, "MSP", "connection:read"),
            client_type(PHARMACY_TYPE, "PHARMACY", "connection:read"),
            client_type(NHS_TYPE, "NHS", "connection:read"),
        ],
        clients: vec![
            client(ADMIN_CLIENT, "Demo Mithril admin", ADMIN_TYPE, DIRECT),
            client(
                MIS_CLIENT,
                "Demo MIS",
                MIS_TYPE,
                r#"{"access_type": "DIRECT", "broker_scope": "connection:read legal_entity:read"}"#,
            ),
            client(
                MSP_CLIENT,
                "Demo MSP",
                MSP_TYPE,
                r#"{"access_type": "BROKER"}"#,
            ),
            client(PHARMACY_CLIENT, "Demo pharmacy", PHARMACY_TYPE, DIRECT),
            client(NHS_CLIENT, "Demo NHS", NHS_TYPE, DIRECT),
            Client {
                is_blocked: true,
                ..client(BLOCKED_CLIENT, "Demo blocked MSP", MSP_TYPE, DIRECT)
            },
        ],
        connections: vec![
            connection(MIS_CONNECTION, MIS_CLIENT, MIS_CLIENT, MIS_API_KEY),
            connection(
                MSP_CONNECTION,
                MSP_CLIENT,
                MIS_CLIENT,
                "-qrfZ-qYmBrq5hCCmfDZzg",
            ),
            connection(
                PHARMACY_CONNECTION,
                PHARMACY_CLIENT,
                PHARMACY_CLIENT,
                "kRxF5GN54x5dz9DjNPMn7A",
            ),
            connection(
                BLOCKED_CONNECTION,
                BLOCKED_CLIENT,
                BLOCKED_CLIENT,
                "dkUWA_deE4PfZs7BdxTnYg",
            ),
            connection(
                NHS_CONNECTION,
                NHS_CLIENT,
                NHS_CLIENT,
                "Vb2nQd7xTq9LmWc4Rk1sZa",
            ),
        ],
        tokens: vec![
            token(
                access,
                ADMIN_TOKEN,
                ADMIN_CLIENT,
                "connection:read connection:write",
                valid,
            ),
            token(
                access,
                MIS_TOKEN,
                MIS_CLIENT,
                "connection:read connection:write",
                valid,
            ),
            token(access, MSP_TOKEN, MSP_CLIENT, "connection:read", valid),
            token(
                access,
                PHARMACY_TOKEN,
                PHARMACY_CLIENT,
                "connection:read",
                valid,
            ),
            token(
                access,
                MIS_WITHOUT_SCOPE_TOKEN,
                MIS_CLIENT,
                "connection:read_all",
                valid,
            ),
            token(
                access,
                BLOCKED_TOKEN,
                BLOCKED_CLIENT,
                "connection:read",
                valid,
            ),
            token(
                access,
                EXPIRED_TOKEN,
                MIS_CLIENT,
                "connection:read",
                now - 3600,
            ),
            token(
                "refresh_token",
                REFRESH_TOKEN,
                MIS_CLIENT,
                "connection:read",
                valid,
            ),
            token(access, NHS_TOKEN, NHS_CLIENT, "connection:read", valid),
        ],
    }
}

/// The demo tokens and what each shows, one per line.
pub fn tokens_table() -> String {
    let rows = [
        (
            "Mithril ADMIN",
            ADMIN_TOKEN,
            "reads any client's connections",
        ),
        ("MIS", MIS_TOKEN, "reads the MIS's own connections"),
        (
            "MSP",
            MSP_TOKEN,
            "acts through the MIS: send `api-key: aR2OnpJE52IMGYQNh-oG8w`",
        ),
        (
            "PHARMACY",
            PHARMACY_TOKEN,
            "reads the pharmacy's own connections",
        ),
        (
            "MIS",
            MIS_WITHOUT_SCOPE_TOKEN,
            "lacks `connection:read`: 403 Invalid scopes",
        ),
        ("MSP", BLOCKED_TOKEN, "its client is blocked: 401"),
        ("MIS", EXPIRED_TOKEN, "expired: 401"),
        (
            "MIS",
            REFRESH_TOKEN,
            "a refresh token, not a credential: 401",
        ),
        (
            "NHS",
            NHS_TOKEN,
            "no shipped policy grants NHS: 403 (README shows how to grant it)",
        ),
    ];
    let mut out = String::from("Demo access tokens (public values, for trying only):\n");
    for (client_type, token, what) in rows {
        let _ = writeln!(out, "  {client_type:<14} {token}  {what}");
    }
    out
}

/// What `serve` prints when it answers from the demo data: the tokens and
/// `curl` lines that work against `addr`.
pub fn banner(addr: SocketAddr) -> String {
    let mut out = String::from("mithril-gate is answering from its embedded demo database.\n");
    // Listening on every interface: the curl lines use loopback, and the
    // operator hears that public demo tokens are reachable from outside.
    let addr = if addr.ip().is_unspecified() {
        let _ = writeln!(
            out,
            "WARNING: listening on every interface ({addr}); these public demo tokens \
             work from anywhere that reaches it"
        );
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    let url = |client: Uuid, connection: Uuid| {
        format!("http://{addr}/api/clients/{client}/connections/{connection}")
    };
    out.push_str(&tokens_table());
    let _ = writeln!(
        out,
        "Try (200; 403 for another client's connection; 200 through a broker):"
    );
    let _ = writeln!(
        out,
        "  curl -i -H 'Authorization: Bearer {MIS_TOKEN}' {}",
        url(MIS_CLIENT, MIS_CONNECTION)
    );
    let _ = writeln!(
        out,
        "  curl -i -H 'Authorization: Bearer {MIS_TOKEN}' {}",
        url(PHARMACY_CLIENT, PHARMACY_CONNECTION)
    );
    let _ = writeln!(
        out,
        "  curl -i -H 'Authorization: Bearer {MSP_TOKEN}' -H 'api-key: {MIS_API_KEY}' {}",
        url(MSP_CLIENT, MSP_CONNECTION)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_points_curl_at_loopback_when_listening_everywhere() {
        for (listen, reachable) in [
            ("0.0.0.0:8080", "http://127.0.0.1:8080/"),
            ("[::]:8080", "http://[::1]:8080/"),
        ] {
            let banner = banner(listen.parse().unwrap());
            assert!(
                banner.contains("WARNING: listening on every interface"),
                "{banner}"
            );
            assert!(banner.contains(reachable), "{banner}");
        }
        let local = banner("127.0.0.1:8080".parse().unwrap());
        assert!(!local.contains("WARNING"), "{local}");
        assert!(
            local.contains("http://127.0.0.1:8080/api/clients/"),
            "{local}"
        );
    }
}
