-- Mithril's tables, as Mithril's own migrations leave them (the columns the
-- gateway reads, with the foreign keys, indexes and extra columns around
-- them). `mithril-gate db init` runs this in an empty PostgreSQL database so
-- the gateway can be tried without a Mithril; the tests build their database
-- from it. The gateway itself never creates or alters a table in a database
-- it is pointed at.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email varchar(255) NOT NULL,
    password varchar(255),
    settings jsonb,
    priv_settings jsonb,
    is_blocked boolean NOT NULL DEFAULT false,
    block_reason varchar(255),
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE UNIQUE INDEX users_email_index ON users (email);

CREATE TABLE client_types (
    id uuid PRIMARY KEY,
    name varchar(255),
    scope varchar(2048),
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE UNIQUE INDEX client_types_name_index ON client_types (name);

CREATE TABLE clients (
    id uuid PRIMARY KEY,
    name varchar(255) NOT NULL,
    secret varchar(255),
    redirect_uri varchar(255),
    settings jsonb,
    priv_settings jsonb,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    client_type_id uuid NOT NULL REFERENCES client_types (id),
    is_blocked boolean NOT NULL DEFAULT false,
    block_reason varchar(255),
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE INDEX clients_user_id_index ON clients (user_id);

CREATE TABLE connections (
    id uuid PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    consumer_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    redirect_uri varchar(255) NOT NULL,
    secret varchar(255) NOT NULL,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE UNIQUE INDEX connections_secret_index ON connections (secret);
CREATE UNIQUE INDEX connections_client_id_consumer_id_index
    ON connections (client_id, consumer_id);

CREATE TABLE tokens (
    id uuid PRIMARY KEY,
    name varchar(255) NOT NULL,
    value varchar(255) NOT NULL,
    expires_at integer NOT NULL,
    details jsonb,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE UNIQUE INDEX tokens_value_name_index ON tokens (value, name);
CREATE INDEX tokens_user_id_index ON tokens (user_id);
