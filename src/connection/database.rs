//! Reading connections from Mithril's `connections` table.

use uuid::Uuid;

use super::{Connection, ConnectionSource, Fetch, FetchError};
use crate::db::{Bind, Database, Sql};
use crate::token::BoxFuture;

/// Connections in Mithril's database. The query names its columns, and
/// `secret` is not one of them.
pub struct DatabaseConnections {
    db: Database,
}

impl DatabaseConnections {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

type Row = (String, String, String, String, String, String);

const CONNECTION: Sql = Sql {
    postgres: "SELECT id::text, client_id::text, consumer_id::text, redirect_uri, \
               to_char(inserted_at, 'YYYY-MM-DD\"T\"HH24:MI:SS'), \
               to_char(updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS') \
               FROM connections WHERE id = $1::uuid AND client_id = $2::uuid",
    sqlite: "SELECT id, client_id, consumer_id, redirect_uri, \
             strftime('%Y-%m-%dT%H:%M:%S', inserted_at), \
             strftime('%Y-%m-%dT%H:%M:%S', updated_at) \
             FROM connections WHERE id = $1 AND client_id = $2",
};

impl ConnectionSource for DatabaseConnections {
    fn fetch<'a>(
        &'a self,
        fetch: Fetch<'a>,
    ) -> BoxFuture<'a, Result<Option<Connection>, FetchError>> {
        Box::pin(async move {
            let id = fetch.connection_id.to_string();
            let client = fetch.client_id.to_string();
            let row: Option<Row> = self
                .db
                .fetch_optional(&CONNECTION, &[Bind::Text(&id), Bind::Text(&client)])
                .await
                .map_err(|e| FetchError::Unavailable(Box::new(e)))?;
            row.map(connection).transpose()
        })
    }
}

fn connection(row: Row) -> Result<Connection, FetchError> {
    let (id, client_id, consumer_id, redirect_uri, inserted_at, updated_at) = row;
    let uuid = |column: &str, value: &str| {
        Uuid::try_parse(value)
            .map_err(|_| FetchError::Malformed(format!("`{column}` is not a uuid")))
    };
    Ok(Connection {
        id: uuid("id", &id)?,
        client_id: uuid("client_id", &client_id)?,
        consumer_id: uuid("consumer_id", &consumer_id)?,
        redirect_uri,
        inserted_at,
        updated_at,
    })
}
