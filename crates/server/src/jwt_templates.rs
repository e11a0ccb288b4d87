//! JWT templates: named claim sets that `GetToken(template)` and
//! `CreateSessionToken(template)` put in a session token, for services
//! that expect claims of their own (Hasura, Supabase, …).
//!
//! A template is a JSON object of claims whose strings may hold shortcodes:
//! `{{user.id}}`, `{{user.external_id}}`, `{{user.first_name}}`,
//! `{{user.last_name}}`, `{{user.full_name}}`, `{{user.username}}`,
//! `{{user.primary_email_address}}`, `{{user.primary_phone_number}}`,
//! `{{user.email_verified}}`, `{{user.phone_number_verified}}`,
//! `{{user.has_image}}`, `{{user.created_at}}`, `{{session.id}}`,
//! `{{user.public_metadata}}` and `{{user.unsafe_metadata}}`, with an
//! optional path (`{{user.public_metadata.role}}`). A string that is one
//! shortcode becomes the value itself (a number, object, array or `null`
//! when absent); shortcodes inside longer strings are written as text.
//! Private metadata is never available: tokens reach the browser. The
//! registered claims (`sub`, `sid`, `iss`, `iat`, `nbf`, `exp`) are
//! Roster's and cannot be set by a template. Templates load from a JSON file
//! (`{"name": {"claims": {…}, "lifetime": 60}}`) at start-up, where a bad
//! shortcode stops the server; `hasura` is built in.

use std::collections::HashMap;
use std::path::Path;

use roster_domain::{SessionId, User};
use serde_json::{Map, Value, json};

/// Claims a template may not set.
pub const REGISTERED: [&str; 6] = ["sub", "sid", "iss", "iat", "nbf", "exp"];

/// One template.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtTemplate {
    pub claims: Map<String, Value>,
    /// Token lifetime in seconds.
    pub lifetime_s: i64,
}

/// Every template, by name.
#[derive(Clone, Debug)]
pub struct JwtTemplates(HashMap<String, JwtTemplate>);

impl Default for JwtTemplates {
    /// Just the built-in `hasura` template.
    fn default() -> Self {
        let hasura = json!({
            "https://hasura.io/jwt/claims": {
                "x-hasura-default-role": "user",
                "x-hasura-allowed-roles": ["user"],
                "x-hasura-user-id": "{{user.id}}"
            }
        });
        let Value::Object(claims) = hasura else {
            unreachable!("a JSON object literal")
        };
        Self(HashMap::from([(
            "hasura".to_owned(),
            JwtTemplate {
                claims,
                lifetime_s: 60,
            },
        )]))
    }
}

/// A template that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("JWT template {name:?}: {why}")]
pub struct TemplateError {
    name: String,
    why: String,
}

const SHORTCODES: [&str; 13] = [
    "user.id",
    "user.external_id",
    "user.first_name",
    "user.last_name",
    "user.full_name",
    "user.username",
    "user.primary_email_address",
    "user.primary_phone_number",
    "user.email_verified",
    "user.phone_number_verified",
    "user.has_image",
    "user.created_at",
    "session.id",
];

fn known(code: &str) -> bool {
    SHORTCODES.contains(&code)
        || ["user.public_metadata", "user.unsafe_metadata"]
            .iter()
            .any(|m| {
                code == *m
                    || code
                        .strip_prefix(m)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
}

/// The shortcodes in a string, in order.
fn shortcodes(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        found.push(rest[start + 2..start + end].trim());
        rest = &rest[start + end + 2..];
    }
    found
}

fn check(name: &str, value: &Value) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => {
            for code in shortcodes(s) {
                if !known(code) {
                    return Err(TemplateError {
                        name: name.to_owned(),
                        why: format!("unknown shortcode {{{{{code}}}}}"),
                    });
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check(name, v)),
        Value::Object(map) => map.values().try_for_each(|v| check(name, v)),
        _ => Ok(()),
    }
}

impl JwtTemplates {
    /// The built-in templates and those in `path` (which may replace them).
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let error = |why: String| TemplateError {
            name: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let file: Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        let mut templates = Self::default();
        for (name, spec) in file {
            templates.0.insert(name.clone(), Self::parse(&name, &spec)?);
        }
        Ok(templates)
    }

    fn parse(name: &str, spec: &Value) -> Result<JwtTemplate, TemplateError> {
        let why = |why: &str| TemplateError {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        let claims = spec
            .get("claims")
            .and_then(Value::as_object)
            .ok_or_else(|| why("\"claims\" must be a JSON object"))?
            .clone();
        if let Some(claim) = claims.keys().find(|k| REGISTERED.contains(&k.as_str())) {
            return Err(why(&format!(
                "{claim:?} is set by Roster and cannot be templated"
            )));
        }
        let lifetime_s = match spec.get("lifetime") {
            None => 60,
            Some(v) => v
                .as_i64()
                .filter(|s| (30..=315_360_000).contains(s))
                .ok_or_else(|| why("\"lifetime\" must be 30 to 315360000 seconds"))?,
        };
        check(name, &Value::Object(claims.clone()))?;
        Ok(JwtTemplate { claims, lifetime_s })
    }

    /// The template called `name`.
    pub fn get(&self, name: &str) -> Option<&JwtTemplate> {
        self.0.get(name)
    }
}

/// The value of a shortcode for a user and session.
fn value_of(code: &str, user: &User, session: &SessionId) -> Value {
    let text = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let primary_email = user.primary_email();
    let primary_phone = user
        .primary_phone_number_id
        .as_ref()
        .and_then(|id| user.phone(id));
    let metadata = |m: &roster_domain::Metadata, path: &str| {
        let mut value = Value::Object(m.as_map().clone());
        for key in path.split('.').filter(|k| !k.is_empty()) {
            value = value.get(key).cloned().unwrap_or(Value::Null);
        }
        value
    };
    match code {
        "user.id" => Value::String(user.id.to_string()),
        "user.external_id" => text(user.external_id.as_ref().map(ToString::to_string)),
        "user.first_name" => text(user.first_name.as_ref().map(ToString::to_string)),
        "user.last_name" => text(user.last_name.as_ref().map(ToString::to_string)),
        "user.full_name" => {
            let parts: Vec<String> = [&user.first_name, &user.last_name]
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            text((!parts.is_empty()).then(|| parts.join(" ")))
        }
        "user.username" => text(user.username.as_ref().map(ToString::to_string)),
        "user.primary_email_address" => text(primary_email.map(|e| e.email.to_string())),
        "user.primary_phone_number" => text(primary_phone.map(|p| p.phone.to_string())),
        "user.email_verified" => {
            Value::Bool(primary_email.is_some_and(|e| e.verification.is_verified()))
        }
        "user.phone_number_verified" => {
            Value::Bool(primary_phone.is_some_and(|p| p.verification.is_verified()))
        }
        "user.has_image" => Value::Bool(user.has_image()),
        "user.created_at" => json!(user.created_at.as_millis().div_euclid(1000)),
        "session.id" => Value::String(session.to_string()),
        other => {
            if let Some(path) = other.strip_prefix("user.public_metadata") {
                metadata(&user.public_metadata, path)
            } else if let Some(path) = other.strip_prefix("user.unsafe_metadata") {
                metadata(&user.unsafe_metadata, path)
            } else {
                Value::Null
            }
        }
    }
}

fn render_value(value: &Value, user: &User, session: &SessionId) -> Value {
    match value {
        Value::String(s) => {
            let codes = shortcodes(s);
            let whole = s.trim();
            if codes.len() == 1 && whole.starts_with("{{") && whole.ends_with("}}") {
                return value_of(codes[0], user, session);
            }
            // One pass, left to right: substituted values are never read
            // again as template text.
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(len) = rest[start..].find("}}") else {
                    break;
                };
                out.push_str(&rest[..start]);
                let code = rest[start + 2..start + len].trim();
                match value_of(code, user, session) {
                    Value::String(t) => out.push_str(&t),
                    Value::Null => {}
                    other => out.push_str(&other.to_string()),
                }
                rest = &rest[start + len + 2..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, user, session))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_value(v, user, session)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl JwtTemplate {
    /// The template's claims for a user and session.
    pub fn render(&self, user: &User, session: &SessionId) -> Map<String, Value> {
        self.claims
            .iter()
            .map(|(k, v)| (k.clone(), render_value(v, user, session)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_domain::{Email, Metadata, NewIdentifiers, NewUser, Timestamp};

    fn ada() -> User {
        User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![Email::parse("ada@example.com").unwrap()],
                    phones: vec![],
                    verified: true,
                },
                first_name: roster_domain::Name::parse("Ada").unwrap(),
                public_metadata: Metadata::parse(json!({"role": "admin", "org": {"id": 7}}))
                    .unwrap(),
                private_metadata: Metadata::parse(json!({"secret": "never"})).unwrap(),
                ..NewUser::default()
            },
            Timestamp::from_millis(1_700_000_000_000),
        )
        .unwrap()
    }

    #[test]
    fn shortcodes_render_as_values_or_text() {
        let spec = json!({"claims": {
            "email": "{{user.primary_email_address}}",
            "role": "{{user.public_metadata.role}}",
            "org": "{{user.public_metadata.org}}",
            "missing": "{{user.public_metadata.nope}}",
            "greeting": "hello {{user.first_name}} ({{user.public_metadata.org.id}})",
            "verified": "{{user.email_verified}}",
            "list": ["{{user.id}}", 1],
        }, "lifetime": 120});
        let template = JwtTemplates::parse("t", &spec).unwrap();
        assert_eq!(template.lifetime_s, 120);
        let user = ada();
        let session = SessionId::generate(Timestamp::from_millis(0));
        let claims = Value::Object(template.render(&user, &session));
        assert_eq!(claims["email"], "ada@example.com");
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["org"], json!({"id": 7}));
        assert_eq!(claims["missing"], Value::Null);
        assert_eq!(claims["greeting"], "hello Ada (7)");
        assert_eq!(claims["verified"], true);
        assert_eq!(claims["list"], json!([user.id.to_string(), 1]));
        // A value that looks like a shortcode stays text.
        let mut sneaky = ada();
        sneaky.unsafe_metadata =
            Metadata::parse(json!({"n": "{{user.public_metadata.role}}"})).unwrap();
        let spec =
            json!({"claims": {"x": "{{user.unsafe_metadata.n}}|{{user.public_metadata.role}}"}});
        let rendered = JwtTemplates::parse("t", &spec)
            .unwrap()
            .render(&sneaky, &session);
        assert_eq!(rendered["x"], "{{user.public_metadata.role}}|admin");
        let hasura = JwtTemplates::default();
        let rendered = Value::Object(hasura.get("hasura").unwrap().render(&user, &session));
        assert_eq!(
            rendered["https://hasura.io/jwt/claims"]["x-hasura-user-id"],
            user.id.to_string()
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for spec in [
            json!({"claims": {"x": "{{user.private_metadata}}"}}),
            json!({"claims": {"x": "{{user.password}}"}}),
            json!({"claims": {"sub": "me"}}),
            json!({"claims": {}, "lifetime": 5}),
            json!({"claims": "nope"}),
        ] {
            assert!(JwtTemplates::parse("t", &spec).is_err(), "{spec}");
        }
    }
}
