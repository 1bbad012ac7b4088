//! Who may do what, decided by Cedar policies that live in files.
//!
//! The request becomes a Cedar request:
//! - principal `Mithril::Client::"<token's client id>"`, whose parent is
//!   `Mithril::ClientType::"<CLIENT TYPE NAME>"` (upper-cased, because
//!   Mithril spells one type several ways);
//! - action `Mithril::Action::"<scope the route needs>"`, such as
//!   `"connection:read"`;
//! - resource `Mithril::Connection::"<connection id>"` with attribute
//!   `owner`, the `Mithril::Client` from the path;
//! - context `{ scopes }`: the token's scopes, bounded by the broker's scope
//!   when the client acts through an MIS.
//!
//! Each policy carries `@id("...")`, which names it in logs and answers, and a
//! forbid may carry `@message("...")`, the text of the 403 it causes. When
//! several forbids apply, the first loaded (files by name, then their order
//! in the file) gives the message. A deny no policy determined (no permit
//! applied) is answered 403 `forbidden` without a message.

mod load;
mod store;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
};
use uuid::Uuid;

pub use load::{LoadError, LoadErrors, Loaded, PolicyPaths};
pub use store::{PolicyStore, REPORTED_PROBLEMS};
pub use watch::{Reload, Reloader, watch};

use crate::route::Route;
use crate::token::{Principal, Scopes};

/// A strictly validated schema and policy set, ready to decide.
#[derive(Debug)]
pub struct Policies {
    schema: Schema,
    set: PolicySet,
    info: HashMap<PolicyId, PolicyInfo>,
    names: Names,
    generation: String,
    authorizer: Authorizer,
}

/// What the service reads from a policy besides its rule.
#[derive(Debug, Clone)]
struct PolicyInfo {
    /// Position in load order, which decides whose message a 403 carries.
    order: usize,
    /// `@message`: the error message of a deny this policy determines.
    message: Option<String>,
    file: PathBuf,
    /// Where the policy starts in its file.
    position: Option<(usize, usize)>,
}

/// The entity types the gateway builds requests from, parsed once.
#[derive(Debug, Clone)]
struct Names {
    client: EntityTypeName,
    client_type: EntityTypeName,
    connection: EntityTypeName,
    action: EntityTypeName,
}

/// The outcome of asking the policies; a deny is a decision, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The `@id`s of the policies that determined the decision, in load
    /// order: the permits that allowed, or the forbids that denied.
    pub policies: Vec<String>,
    /// For a deny, the `@message` of the first determining forbid.
    pub message: Option<String>,
    /// Policies that failed to evaluate. Cedar skips them; the gateway
    /// then refuses to allow, so a broken forbid cannot open access.
    pub errors: Vec<String>,
}

/// A decision laid open, for policy authors: the Cedar request it was
/// made on and the policies that determined it.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The principal's entity uid and its parent, the client type.
    pub principal: String,
    pub parents: Vec<String>,
    pub action: String,
    pub resource: String,
    /// The resource's `owner` attribute.
    pub owner: String,
    /// `context.scopes`.
    pub scopes: Vec<String>,
    pub decision: Decision,
    /// The determining policies, in load order.
    pub determining: Vec<PolicyNote>,
}

/// One policy as an author finds it.
#[derive(Debug, Clone)]
pub struct PolicyNote {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// `file:line:column`.
    pub place: String,
    /// Every annotation, `@id` included, in the policy's order.
    pub annotations: Vec<(String, String)>,
}

/// The entity uids of one request.
struct Uids {
    caller: EntityUid,
    client_type: EntityUid,
    owner: EntityUid,
    resource: EntityUid,
    action: EntityUid,
}

/// The request could not be put to the policies: the schema does not
/// describe what the gateway sends. Our fault, answered 500.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the authorization request: {0}")]
pub struct DecideError(String);

impl Policies {
    /// A hash of the schema and policy files: which rules are serving.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Whether any policy is a `permit`: without one, every request is
    /// denied.
    pub fn permits_anything(&self) -> bool {
        self.set
            .policies()
            .any(|policy| policy.effect() == cedar_policy::Effect::Permit)
    }

    /// The `@id`s of every policy, in load order.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<_> = self.info.iter().collect();
        ids.sort_by_key(|(_, info)| info.order);
        ids.into_iter().map(|(id, _)| id.as_ref()).collect()
    }

    /// Whether `principal` may make the request `route` describes.
    pub fn decide(&self, principal: &Principal, route: &Route) -> Result<Decision, DecideError> {
        let (request, entities) = self.request(principal, route).map_err(DecideError)?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        let mut policies: Vec<&PolicyId> = response.diagnostics().reason().collect();
        policies.sort_by_key(|id| self.info.get(*id).map_or(usize::MAX, |info| info.order));
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
        let message = if allowed {
            None
        } else {
            policies
                .iter()
                .find_map(|id| self.info.get(*id)?.message.clone())
        };
        Ok(Decision {
            allowed,
            policies: policies.iter().map(|id| id.to_string()).collect(),
            message,
            errors,
        })
    }

    /// The decision on `route` for `principal`, with the request it was
    /// made on and the determining policies' annotations.
    pub fn explain(
        &self,
        principal: &Principal,
        route: &Route,
    ) -> Result<Explanation, DecideError> {
        let decision = self.decide(principal, route)?;
        let uids = self.uids(principal, route);
        let determining = decision
            .policies
            .iter()
            .filter_map(|id| self.note(id))
            .collect();
        Ok(Explanation {
            principal: uids.caller.to_string(),
            parents: vec![uids.client_type.to_string()],
            action: uids.action.to_string(),
            resource: uids.resource.to_string(),
            owner: uids.owner.to_string(),
            scopes: principal.effective_scopes().map(str::to_owned).collect(),
            decision,
            determining,
        })
    }

    fn note(&self, id: &str) -> Option<PolicyNote> {
        let id = PolicyId::new(id);
        let policy = self.set.policy(&id)?;
        let info = self.info.get(&id)?;
        let place = match info.position {
            Some((line, column)) => format!("{}:{line}:{column}", info.file.display()),
            None => info.file.display().to_string(),
        };
        Some(PolicyNote {
            id: id.to_string(),
            effect: match policy.effect() {
                cedar_policy::Effect::Permit => "permit",
                cedar_policy::Effect::Forbid => "forbid",
            },
            place,
            annotations: policy
                .annotations()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        })
    }

    fn uids(&self, principal: &Principal, route: &Route) -> Uids {
        let Route::ConnectionDetails {
            client_id,
            connection_id,
        } = *route;
        let uid = |type_name: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
        };
        Uids {
            caller: uid(&self.names.client, &principal.client_id.to_string()),
            client_type: uid(&self.names.client_type, &principal.client_type_key()),
            owner: uid(&self.names.client, &client_id.to_string()),
            resource: uid(&self.names.connection, &connection_id.to_string()),
            action: uid(&self.names.action, route.action()),
        }
    }

    fn request(&self, principal: &Principal, route: &Route) -> Result<(Request, Entities), String> {
        let Uids {
            caller,
            client_type,
            owner,
            resource,
            action,
        } = self.uids(principal, route);

        let connection = Entity::new(
            resource.clone(),
            HashMap::from([(
                "owner".to_owned(),
                RestrictedExpression::new_entity_uid(owner),
            )]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let entities = [
            Entity::new_no_attrs(caller.clone(), HashSet::from([client_type.clone()])),
            Entity::new_no_attrs(client_type, HashSet::new()),
            connection,
        ];
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| e.to_string())?;
        let scopes = principal
            .effective_scopes()
            .map(|s| RestrictedExpression::new_string(s.to_owned()));
        let context =
            Context::from_pairs([("scopes".to_owned(), RestrictedExpression::new_set(scopes))])
                .map_err(|e| e.to_string())?;
        let request = Request::new(caller, action, resource, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

impl Names {
    /// The names the gateway uses, checked against the schema by building
    /// a request of every kind the gateway makes.
    fn check(schema: &Schema) -> Result<Self, String> {
        let parse = |name: &str| EntityTypeName::from_str(name).map_err(|e| e.to_string());
        let names = Self {
            client: parse("Mithril::Client")?,
            client_type: parse("Mithril::ClientType")?,
            connection: parse("Mithril::Connection")?,
            action: parse("Mithril::Action")?,
        };
        let probe = Policies {
            schema: schema.clone(),
            set: PolicySet::new(),
            info: HashMap::new(),
            names: names.clone(),
            generation: String::new(),
            authorizer: Authorizer::new(),
        };
        let principal = Principal {
            client_id: Uuid::nil(),
            client_type: "MIS".into(),
            scopes: Scopes::parse("connection:read"),
            user_id: None,
            broker: None,
        };
        let route = Route::ConnectionDetails {
            client_id: Uuid::nil(),
            connection_id: Uuid::nil(),
        };
        probe.request(&principal, &route).map_err(|e| {
            format!("the schema does not describe the requests the gateway makes: {e}")
        })?;
        Ok(names)
    }
}

#[cfg(test)]
mod tests;
