//! Writing rows into Mithril's tables: the demo data, the tests' data and
//! the policy fixtures' data all go through here.
//!
//! Only a database the gateway created (`db init`, the embedded demo, an
//! in-memory fixture store) is ever written.

use uuid::Uuid;

use super::{Bind, Database, DbError, Sql};

/// The time every seeded row says it was inserted and updated.
const SEEDED_AT: &str = "2024-01-15 09:30:00";

/// A `users` row: the owner of clients and tokens.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub is_blocked: bool,
}

/// A `client_types` row.
#[derive(Debug, Clone)]
pub struct ClientType {
    pub id: Uuid,
    pub name: String,
    pub scope: String,
}

/// A `clients` row.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: Uuid,
    pub name: String,
    pub client_type_id: Uuid,
    pub user_id: Option<Uuid>,
    pub is_blocked: bool,
    /// `priv_settings` as JSON text (`access_type`, `broker_scope`).
    pub priv_settings: String,
}

/// A `connections` row.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: Uuid,
    pub client_id: Uuid,
    pub consumer_id: Uuid,
    pub redirect_uri: String,
    pub secret: String,
}

/// A `tokens` row.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: Uuid,
    /// `access_token`, `refresh_token`, `authorization_code`, ...
    pub name: String,
    pub value: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// `details` as JSON text (`client_id`, `scope`, ...).
    pub details: String,
    pub user_id: Option<Uuid>,
}

/// Rows to write, in an order the foreign keys accept.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub users: Vec<User>,
    pub client_types: Vec<ClientType>,
    pub clients: Vec<Client>,
    pub connections: Vec<Connection>,
    pub tokens: Vec<Token>,
}

const INSERT_USER: Sql = Sql {
    postgres: "INSERT INTO users (id, email, is_blocked, inserted_at, updated_at) \
               VALUES ($1::uuid, $2, $3, $4::timestamp, $4::timestamp)",
    sqlite: "INSERT INTO users (id, email, is_blocked, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
};

const INSERT_CLIENT_TYPE: Sql = Sql {
    postgres: "INSERT INTO client_types (id, name, scope, inserted_at, updated_at) \
               VALUES ($1::uuid, $2, $3, $4::timestamp, $4::timestamp)",
    sqlite: "INSERT INTO client_types (id, name, scope, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
};

const INSERT_CLIENT: Sql = Sql {
    postgres: "INSERT INTO clients (id, name, client_type_id, user_id, is_blocked, \
               settings, priv_settings, inserted_at, updated_at) \
               VALUES ($1::uuid, $2, $3::uuid, $4::uuid, $5, '{}'::jsonb, $6::jsonb, \
               $7::timestamp, $7::timestamp)",
    sqlite: "INSERT INTO clients (id, name, client_type_id, user_id, is_blocked, \
             settings, priv_settings, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, '{}', $6, $7, $7)",
};

const INSERT_CONNECTION: Sql = Sql {
    postgres: "INSERT INTO connections (id, client_id, consumer_id, redirect_uri, secret, \
               inserted_at, updated_at) \
               VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6::timestamp, $6::timestamp)",
    sqlite: "INSERT INTO connections (id, client_id, consumer_id, redirect_uri, secret, \
             inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
};

const INSERT_TOKEN: Sql = Sql {
    postgres: "INSERT INTO tokens (id, name, value, expires_at, details, user_id, \
               inserted_at, updated_at) \
               VALUES ($1::uuid, $2, $3, $4::int4, $5::jsonb, $6::uuid, \
               $7::timestamp, $7::timestamp)",
    sqlite: "INSERT INTO tokens (id, name, value, expires_at, details, user_id, \
             inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
};

impl Rows {
    /// Writes every row, parents first.
    pub async fn insert(&self, db: &Database) -> Result<(), DbError> {
        for user in &self.users {
            let id = user.id.to_string();
            let binds = [
                Bind::Text(&id),
                Bind::Text(&user.email),
                Bind::Bool(user.is_blocked),
                Bind::Text(SEEDED_AT),
            ];
            db.execute(&INSERT_USER, &binds).await?;
        }
        for client_type in &self.client_types {
            let id = client_type.id.to_string();
            let binds = [
                Bind::Text(&id),
                Bind::Text(&client_type.name),
                Bind::Text(&client_type.scope),
                Bind::Text(SEEDED_AT),
            ];
            db.execute(&INSERT_CLIENT_TYPE, &binds).await?;
        }
        for client in &self.clients {
            let id = client.id.to_string();
            let client_type_id = client.client_type_id.to_string();
            let user_id = client.user_id.map(|id| id.to_string());
            let binds = [
                Bind::Text(&id),
                Bind::Text(&client.name),
                Bind::Text(&client_type_id),
                Bind::OptionalText(user_id.as_deref()),
                Bind::Bool(client.is_blocked),
                Bind::Text(&client.priv_settings),
                Bind::Text(SEEDED_AT),
            ];
            db.execute(&INSERT_CLIENT, &binds).await?;
        }
        for connection in &self.connections {
            let id = connection.id.to_string();
            let client_id = connection.client_id.to_string();
            let consumer_id = connection.consumer_id.to_string();
            let binds = [
                Bind::Text(&id),
                Bind::Text(&client_id),
                Bind::Text(&consumer_id),
                Bind::Text(&connection.redirect_uri),
                Bind::Text(&connection.secret),
                Bind::Text(SEEDED_AT),
            ];
            db.execute(&INSERT_CONNECTION, &binds).await?;
        }
        for token in &self.tokens {
            let id = token.id.to_string();
            let user_id = token.user_id.map(|id| id.to_string());
            let binds = [
                Bind::Text(&id),
                Bind::Text(&token.name),
                Bind::Text(&token.value),
                Bind::Int(token.expires_at),
                Bind::Text(&token.details),
                Bind::OptionalText(user_id.as_deref()),
                Bind::Text(SEEDED_AT),
            ];
            db.execute(&INSERT_TOKEN, &binds).await?;
        }
        Ok(())
    }
}
