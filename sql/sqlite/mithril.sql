-- Mithril's tables for the embedded SQLite database: the same tables and
-- columns as sql/postgres/mithril.sql, in SQLite's types. UUIDs are stored
-- as lower-case hyphenated text, JSON as text, timestamps as
-- `YYYY-MM-DD HH:MM:SS` text, booleans as 0 and 1.

CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL,
    password text,
    settings text,
    priv_settings text,
    is_blocked boolean NOT NULL DEFAULT 0,
    block_reason text,
    inserted_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE UNIQUE INDEX users_email_index ON users (email);

CREATE TABLE client_types (
    id text PRIMARY KEY,
    name text,
    scope text,
    inserted_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE UNIQUE INDEX client_types_name_index ON client_types (name);

CREATE TABLE clients (
    id text PRIMARY KEY,
    name text NOT NULL,
    secret text,
    redirect_uri text,
    settings text,
    priv_settings text,
    user_id text REFERENCES users (id) ON DELETE CASCADE,
    client_type_id text NOT NULL REFERENCES client_types (id),
    is_blocked boolean NOT NULL DEFAULT 0,
    block_reason text,
    inserted_at text NOT NULL,
    updated_at text NOT NULL
);

CREATE TABLE connections (
    id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    consumer_id text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    redirect_uri text NOT NULL,
    secret text NOT NULL,
    inserted_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE UNIQUE INDEX connections_secret_index ON connections (secret);
CREATE UNIQUE INDEX connections_client_id_consumer_id_index
    ON connections (client_id, consumer_id);

CREATE TABLE tokens (
    id text PRIMARY KEY,
    name text NOT NULL,
    value text NOT NULL,
    expires_at integer NOT NULL,
    details text,
    user_id text REFERENCES users (id) ON DELETE CASCADE,
    inserted_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE UNIQUE INDEX tokens_value_name_index ON tokens (value, name);
