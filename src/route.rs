//! Strict routing: a request path becomes a typed [`Route`] or nothing.
//!
//! Routing is part of the security here. What the policies decide about is
//! exactly what is fetched or forwarded, so the path is parsed once into
//! typed ids and nothing downstream ever looks at the raw path again. There is
//! no normalisation: `//`, `.` and `..` segments, percent-encoded bytes, a
//! trailing slash, or an id that is not a hyphenated UUID all match no route.
//! A request that matches no route never reaches authentication.

use http::Method;
use uuid::Uuid;

/// The `Allow` header value of every route this service answers.
pub const ALLOW: &str = "GET, HEAD";

/// A request the service knows how to answer, with its ids parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/clients/{id}/connections/{connection_id}`
    ConnectionDetails {
        /// The client from the path: the owner of the connection asked for.
        client_id: Uuid,
        connection_id: Uuid,
    },
}

impl Route {
    /// The route's template, for logs and metrics: never the raw path.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConnectionDetails { .. } => "/api/clients/{id}/connections/{connection_id}",
        }
    }

    /// The scope a token must grant, named as the Cedar action.
    pub fn action(&self) -> &'static str {
        match self {
            Self::ConnectionDetails { .. } => "connection:read",
        }
    }
}

/// Why a request matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route matches the path")]
    NotFound,
    /// The path is a route's, the method is not one it answers.
    #[error("method is not allowed on this route")]
    MethodNotAllowed(Route),
}

/// Match a method and a request path (without the query) to a route.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteError> {
    let route = match_path(path).ok_or(RouteError::NotFound)?;
    if method == Method::GET || method == Method::HEAD {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed(route))
    }
}

fn match_path(path: &str) -> Option<Route> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let mut next = || segments.next();
    let route = match (next()?, next()?, next()?, next()?, next()?) {
        ("api", "clients", client_id, "connections", connection_id) => Route::ConnectionDetails {
            client_id: parse_id(client_id)?,
            connection_id: parse_id(connection_id)?,
        },
        _ => return None,
    };
    // Anything after the last id, even an empty segment from a trailing
    // slash, is another path.
    match next() {
        None => Some(route),
        Some(_) => None,
    }
}

/// Only the hyphenated form (`8-4-4-4-12` hex digits) is an id. The uuid
/// crate also reads braced, `urn:uuid:` and 32-digit forms; a path holding
/// those is not one we serve.
fn parse_id(segment: &str) -> Option<Uuid> {
    if segment.len() != 36 {
        return None;
    }
    Uuid::try_parse(segment).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "1380df72-275a-11e7-93ae-92361f002671";
    const CONNECTION: &str = "e5372365-d47a-467f-81d0-f35117864352";

    fn get(path: &str) -> Result<Route, RouteError> {
        route(&Method::GET, path)
    }

    fn details_path() -> String {
        format!("/api/clients/{CLIENT}/connections/{CONNECTION}")
    }

    #[test]
    fn parses_the_connection_details_route() {
        let parsed = get(&details_path()).unwrap();
        assert_eq!(
            parsed,
            Route::ConnectionDetails {
                client_id: CLIENT.parse().unwrap(),
                connection_id: CONNECTION.parse().unwrap(),
            }
        );
        assert_eq!(route(&Method::HEAD, &details_path()), Ok(parsed));
    }

    #[test]
    fn upper_case_hex_is_the_same_id() {
        let upper = format!(
            "/api/clients/{}/connections/{}",
            CLIENT.to_uppercase(),
            CONNECTION
        );
        assert_eq!(get(&upper), get(&details_path()));
    }

    #[test]
    fn other_methods_on_the_route_are_not_allowed() {
        for method in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            let expected = RouteError::MethodNotAllowed(get(&details_path()).unwrap());
            assert_eq!(route(&method, &details_path()), Err(expected));
        }
    }

    #[test]
    fn other_methods_elsewhere_are_not_found() {
        assert_eq!(
            route(&Method::POST, "/api/clients"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn anything_but_the_exact_shape_is_not_found() {
        let bad = [
            String::new(),
            "/".into(),
            "*".into(),
            "/api/clients".into(),
            format!("/api/clients/{CLIENT}/connections"),
            format!("/api/clients/{CLIENT}/connections/"),
            format!("{}/", details_path()),
            format!("{}//", details_path()),
            format!("/{}", details_path()),
            format!("/api//clients/{CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients//{CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients/{CLIENT}/connections//{CONNECTION}"),
            format!("/api/clients/{CLIENT}/./connections/{CONNECTION}"),
            format!("/api/clients/x/../{CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients/{CLIENT}/connections/{CONNECTION}/.."),
            format!("/api/clients/{CLIENT}%2Fconnections/{CONNECTION}"),
            format!("/api/clients/{CLIENT}/connections%2F{CONNECTION}"),
            format!("/api/clients/%31380df72-275a-11e7-93ae-92361f002671/connections/{CONNECTION}"),
            format!("/API/clients/{CLIENT}/connections/{CONNECTION}"),
            format!("/api/Clients/{CLIENT}/connections/{CONNECTION}"),
            format!("/admin/clients/{CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients/{CLIENT}/connections/{CONNECTION}/extra"),
            format!("/api/clients/1380df72275a11e793ae92361f002671/connections/{CONNECTION}"),
            format!("/api/clients/{{{CLIENT}}}/connections/{CONNECTION}"),
            format!("/api/clients/urn:uuid:{CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients/{CLIENT}/connections/not-a-uuid"),
            format!("/api/clients/{CLIENT}/connections/{}", &CONNECTION[..35]),
            format!("/api/clients/{CLIENT}/connections/{CONNECTION}0"),
            format!("/api/clients/ {CLIENT}/connections/{CONNECTION}"),
            format!("/api/clients/1380df72-275a-11e7-93ae-92361f00267g/connections/{CONNECTION}"),
        ];
        for path in bad {
            assert_eq!(get(&path), Err(RouteError::NotFound), "{path:?}");
        }
    }
}
