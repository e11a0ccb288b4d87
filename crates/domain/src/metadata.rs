//! Metadata: free-form JSON objects attached to a user.
//!
//! Each of the three kinds (public, private, unsafe) is a JSON object. A
//! merge is deep: nested objects merge key by key, arrays and scalars
//! replace, and `null` deletes its key at any depth (Clerk's
//! `UpdateUserMetadata`). Together the three are at most 8 KiB serialized.

use serde_json::{Map, Value};

use crate::error::{FieldViolation, reason};

/// Largest serialized size of the three metadata objects together.
pub const MAX_TOTAL_BYTES: usize = 8 * 1024;
/// Deepest nesting accepted, so recursion over metadata stays bounded.
pub const MAX_DEPTH: usize = 32;

/// A JSON object of metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Map<String, Value>);

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn merge_into(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(patch_obj) => {
                if let Some(Value::Object(existing)) = target.get_mut(&key) {
                    merge_into(existing, patch_obj);
                } else {
                    let mut fresh = Map::new();
                    merge_into(&mut fresh, patch_obj);
                    target.insert(key, Value::Object(fresh));
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

impl Metadata {
    /// Accepts a JSON value as metadata: it must be an object of bounded
    /// depth.
    pub fn parse(value: Value) -> Result<Self, FieldViolation> {
        match value {
            Value::Object(map) => {
                let metadata = Self(map);
                if metadata.depth() > MAX_DEPTH {
                    return Err(FieldViolation::new(
                        "",
                        reason::METADATA_INVALID,
                        format!("metadata is nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                Ok(metadata)
            }
            _ => Err(FieldViolation::new(
                "",
                reason::METADATA_INVALID,
                "metadata must be a JSON object",
            )),
        }
    }

    /// Parses metadata stored by Roster itself.
    pub fn from_json_text(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<Map<String, Value>>(text).map(Self)
    }

    fn depth(&self) -> usize {
        self.0.values().map(depth).max().unwrap_or(0) + 1
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Serialized form, as stored.
    pub fn to_json_text(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// Serialized size in bytes.
    pub fn serialized_len(&self) -> usize {
        serde_json::to_vec(&self.0).map_or(usize::MAX, |v| v.len())
    }

    /// Deep-merges `patch` into this metadata; `null` values delete keys.
    pub fn merge(&mut self, patch: Self) {
        merge_into(&mut self.0, patch.0);
    }

    /// A copy with `null` values removed at every depth, as a replacement
    /// (rather than a merge) stores it.
    #[must_use]
    pub fn without_nulls(self) -> Self {
        let mut clean = Self::default();
        clean.merge(self);
        clean
    }
}

/// Checks the combined size limit of a user's three metadata objects.
pub fn check_total_size(parts: [&Metadata; 3]) -> Result<(), FieldViolation> {
    let total: usize = parts.iter().map(|m| m.serialized_len()).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(FieldViolation::new(
            "",
            reason::METADATA_TOO_LARGE,
            format!(
                "public, private and unsafe metadata together are {total} bytes; at most {MAX_TOTAL_BYTES} are allowed"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(v: Value) -> Metadata {
        Metadata::parse(v).unwrap()
    }

    #[test]
    fn deep_merge_with_null_deletion_and_array_replacement() {
        let mut m = md(json!({"a": {"b": 1, "c": {"d": 2, "e": 3}}, "list": [1, 2], "gone": true}));
        m.merge(md(
            json!({"a": {"c": {"d": null, "f": 4}}, "list": [3], "gone": null, "new": "x"}),
        ));
        assert_eq!(
            Value::Object(m.as_map().clone()),
            json!({"a": {"b": 1, "c": {"e": 3, "f": 4}}, "list": [3], "new": "x"})
        );
    }

    #[test]
    fn merge_into_scalar_replaces_it_with_object_without_nulls() {
        let mut m = md(json!({"a": 1}));
        m.merge(md(json!({"a": {"x": null, "y": 2}})));
        assert_eq!(Value::Object(m.as_map().clone()), json!({"a": {"y": 2}}));
    }

    #[test]
    fn only_objects_are_metadata() {
        assert!(Metadata::parse(json!([1])).is_err());
        assert!(Metadata::parse(json!("x")).is_err());
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "k": deep });
        }
        assert!(Metadata::parse(deep).is_err());
    }

    #[test]
    fn size_limit_counts_all_three() {
        let big = md(json!({"k": "x".repeat(3000)}));
        assert!(check_total_size([&big, &big, &Metadata::default()]).is_ok());
        assert_eq!(
            check_total_size([&big, &big, &big]).unwrap_err().reason,
            reason::METADATA_TOO_LARGE
        );
    }
}
