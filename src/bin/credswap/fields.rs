//! From a secret's value to environment variables: one field (`NAME:FIELD`, dotted for nested
//! objects), the whole value (`NAME`), a JSON object flattened under a prefix, or an Airflow
//! connection. Messages name fields, never values.

use serde_json::{Map, Value};

/// A secret's content, parsed once.
pub enum Content {
    Json(Map<String, Value>),
    Text(String),
}

impl Content {
    pub fn parse(bytes: &[u8]) -> Option<Content> {
        let text = std::str::from_utf8(bytes).ok()?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(Content::Json(map)),
            _ => Some(Content::Text(text.to_owned())),
        }
    }

    /// The field's value as text: strings as they are, numbers and booleans printed, objects
    /// and arrays as JSON, null as empty.
    pub fn field(&self, path: &str) -> Result<String, String> {
        let Content::Json(map) = self else {
            return Err(format!(
                "has no field `{path}`: its value is not a JSON object (map the whole value \
                 without `:FIELD`)"
            ));
        };
        let mut here = map;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some(value) = here.get(part) else {
                let fields: Vec<&str> = here.keys().map(String::as_str).collect();
                return Err(format!(
                    "has no field `{path}` (its fields: {})",
                    if fields.is_empty() {
                        "none".to_owned()
                    } else {
                        fields.join(", ")
                    }
                ));
            };
            if parts.peek().is_none() {
                return Ok(text_of(value));
            }
            match value {
                Value::Object(inner) => here = inner,
                _ => return Err(format!("has no field `{path}`: `{part}` is not an object")),
            }
        }
        Err(format!("has no field `{path}`"))
    }

    /// The whole value as text (a JSON object as compact JSON).
    pub fn whole(&self) -> String {
        match self {
            Content::Json(map) => Value::Object(map.clone()).to_string(),
            Content::Text(text) => text.clone(),
        }
    }

    /// Every leaf as `PREFIX` + upper-cased path joined by `_` (non-alphanumerics become `_`).
    pub fn flatten(&self, prefix: &str) -> Result<Vec<(String, String, String)>, String> {
        let Content::Json(map) = self else {
            return Err("cannot be flattened: its value is not a JSON object".to_owned());
        };
        let mut out = Vec::new();
        flatten_into(map, prefix, "", &mut out);
        Ok(out)
    }

    /// The secret as an Airflow connection (`AIRFLOW_CONN_*`, JSON form): `conn_type`, `host`,
    /// `login`, `password`, `schema`, `port`, `extra`. A secret already in that shape is passed
    /// as it is; the RDS shape (`engine`, `username`, `dbname`) is mapped.
    pub fn airflow(&self) -> Result<String, String> {
        let Content::Json(map) = self else {
            return Err("is not a JSON object, so not a connection".to_owned());
        };
        let pick = |keys: &[&str]| keys.iter().find_map(|k| map.get(*k)).cloned();
        let mut conn = Map::new();
        let conn_type = pick(&["conn_type", "engine"]).unwrap_or(Value::String("postgres".into()));
        let _ = conn.insert("conn_type".into(), conn_type);
        for (to, from) in [
            ("host", &["host"][..]),
            ("login", &["login", "username", "user"][..]),
            ("password", &["password"][..]),
            ("schema", &["schema", "dbname", "database"][..]),
        ] {
            if let Some(value) = pick(from) {
                let _ = conn.insert(to.into(), value);
            }
        }
        if let Some(port) = pick(&["port"]) {
            let port = match &port {
                Value::String(s) => s.parse::<u64>().map(Value::from).unwrap_or(port),
                _ => port,
            };
            let _ = conn.insert("port".into(), port);
        }
        if let Some(extra) = pick(&["extra"]) {
            let _ = conn.insert("extra".into(), extra);
        }
        if !conn.contains_key("login") || !conn.contains_key("password") {
            return Err(
                "is not a connection: it needs `login` (or `username`) and `password`".into(),
            );
        }
        Ok(Value::Object(conn).to_string())
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn env_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn flatten_into(
    map: &Map<String, Value>,
    prefix: &str,
    path: &str,
    out: &mut Vec<(String, String, String)>,
) {
    for (key, value) in map {
        let field = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match value {
            Value::Object(inner) => flatten_into(inner, prefix, &field, out),
            leaf => out.push((
                format!("{prefix}{}", env_name(&field)),
                field,
                text_of(leaf),
            )),
        }
    }
}

/// Fields whose values say where, not who: left unmasked by `--mask`.
pub fn is_locator(field: &str) -> bool {
    let last = field.rsplit('.').next().unwrap_or(field);
    matches!(
        last.to_ascii_lowercase().as_str(),
        "host"
            | "hostname"
            | "port"
            | "engine"
            | "dbname"
            | "database"
            | "schema"
            | "conn_type"
            | "sslmode"
            | "ssl_mode"
            | "dbinstanceidentifier"
            | "region"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RDS: &str = r#"{"engine":"postgres","host":"db","port":5432,"dbname":"orders",
        "username":"app","password":"s3cret-VALUE","options":{"sslmode":"require"}}"#;

    #[test]
    fn fields_nested_fields_and_missing_ones() {
        let content = Content::parse(RDS.as_bytes()).unwrap();
        assert_eq!(content.field("password").unwrap(), "s3cret-VALUE");
        assert_eq!(content.field("port").unwrap(), "5432");
        assert_eq!(content.field("options.sslmode").unwrap(), "require");
        let missing = content.field("pasword").unwrap_err();
        assert!(
            missing.contains("`pasword`") && missing.contains("password, port"),
            "{missing}"
        );
        assert!(!missing.contains("s3cret"));
        assert!(
            content
                .field("port.x")
                .unwrap_err()
                .contains("not an object")
        );
        let text = Content::parse(b"plain-token").unwrap();
        assert_eq!(text.whole(), "plain-token");
        assert!(!text.field("x").unwrap_err().contains("plain-token"));
    }

    #[test]
    fn flattening_upper_cases_and_joins_paths() {
        let content = Content::parse(RDS.as_bytes()).unwrap();
        let flat = content.flatten("DB_").unwrap();
        let names: Vec<&str> = flat.iter().map(|(n, _, _)| n.as_str()).collect();
        assert!(
            names.contains(&"DB_PASSWORD") && names.contains(&"DB_OPTIONS_SSLMODE"),
            "{names:?}"
        );
    }

    #[test]
    fn an_rds_secret_becomes_an_airflow_connection() {
        let content = Content::parse(RDS.as_bytes()).unwrap();
        let conn: Value = serde_json::from_str(&content.airflow().unwrap()).unwrap();
        assert_eq!(conn["conn_type"], "postgres");
        assert_eq!(conn["login"], "app");
        assert_eq!(conn["schema"], "orders");
        assert_eq!(conn["port"], 5432);
        let airflow = Content::parse(br#"{"conn_type":"postgres","login":"a","password":"p","port":"5432","extra":{"sslmode":"require"}}"#).unwrap();
        let conn: Value = serde_json::from_str(&airflow.airflow().unwrap()).unwrap();
        assert_eq!(conn["port"], 5432);
        assert_eq!(conn["extra"]["sslmode"], "require");
        assert!(
            Content::parse(br#"{"host":"h"}"#)
                .unwrap()
                .airflow()
                .is_err()
        );
    }

    #[test]
    fn locators_are_not_masked() {
        assert!(is_locator("host") && is_locator("options.sslmode") && !is_locator("password"));
    }
}
