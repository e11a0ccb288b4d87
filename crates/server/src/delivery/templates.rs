//! The verification mail's subject and bodies, from built-in templates or
//! an operator's directory.
//!
//! A template directory may hold `verification_code.subject`,
//! `verification_code.txt` and `verification_code.html` (each optional;
//! missing ones keep the built-in text), and the same files under a
//! subdirectory per locale (`de/`, `pt-BR/`), used for users with that
//! locale (an exact match first, then the language alone). Templates say
//! `{{code}}`, `{{minutes}}` (how long the code is valid) and `{{to}}` (the
//! address); values are HTML-escaped in the HTML body. An unknown
//! placeholder is refused when the server starts, not when a mail is sent.

use std::collections::HashMap;
use std::path::Path;

const SUBJECT: &str = "Your verification code is {{code}}";
const TEXT: &str = "Your verification code is {{code}}.\n\n\
It is valid for {{minutes}} minutes. If you did not ask for it, you can ignore this message.\n";
const HTML: &str = "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n\
<p>Your verification code is</p>\n<p style=\"font-size: 28px; letter-spacing: 4px\"><strong>{{code}}</strong></p>\n\
<p>It is valid for {{minutes}} minutes. If you did not ask for it, you can ignore this message.</p>\n\
</body></html>\n";

const PLACEHOLDERS: [&str; 3] = ["code", "minutes", "to"];

/// One set of templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Templates {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            subject: SUBJECT.to_owned(),
            text: TEXT.to_owned(),
            html: HTML.to_owned(),
        }
    }
}

/// A rendered mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The default templates and those per locale.
#[derive(Clone, Debug, Default)]
pub struct TemplateSet {
    default: Templates,
    /// Keyed by lowercased locale tag.
    by_locale: HashMap<String, Templates>,
}

/// A template that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unknown placeholder {{{{{name}}}}} (known: code, minutes, to)")]
    UnknownPlaceholder { path: String, name: String },
    #[error("{path}: unclosed placeholder")]
    Unclosed { path: String },
}

impl TemplateSet {
    /// The built-in templates overridden by those in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let default = load_overrides(dir, &Templates::default())?;
        let mut by_locale = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Some(locale) = entry.file_name().to_str()
            {
                let templates = load_overrides(&entry.path(), &default)?;
                by_locale.insert(locale.to_ascii_lowercase(), templates);
            }
        }
        Ok(Self { default, by_locale })
    }

    /// The templates for a locale: exact tag, then its language, then the
    /// default.
    pub fn for_locale(&self, locale: Option<&str>) -> &Templates {
        let Some(locale) = locale.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        let language = locale.split(['-', '_']).next().unwrap_or_default();
        self.by_locale
            .get(&locale)
            .or_else(|| self.by_locale.get(language))
            .unwrap_or(&self.default)
    }

    /// Renders the mail for `locale`.
    pub fn render(&self, locale: Option<&str>, code: &str, minutes: i64, to: &str) -> Rendered {
        let t = self.for_locale(locale);
        let minutes = minutes.to_string();
        let values = [("code", code), ("minutes", minutes.as_str()), ("to", to)];
        Rendered {
            subject: substitute(&t.subject, &values, false),
            text: substitute(&t.text, &values, false),
            html: substitute(&t.html, &values, true),
        }
    }
}

fn load_overrides(dir: &Path, base: &Templates) -> Result<Templates, TemplateError> {
    let read = |name: &str, fallback: &str| -> Result<String, TemplateError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check(&text, &path.display().to_string())?;
                Ok(text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fallback.to_owned()),
            Err(source) => Err(TemplateError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    };
    Ok(Templates {
        subject: read("verification_code.subject", &base.subject)?
            .trim()
            .to_owned(),
        text: read("verification_code.txt", &base.text)?,
        html: read("verification_code.html", &base.html)?,
    })
}

/// Checks that every placeholder in `text` is known.
fn check(text: &str, path: &str) -> Result<(), TemplateError> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
            path: path.to_owned(),
        })?;
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(TemplateError::UnknownPlaceholder {
                path: path.to_owned(),
                name: name.to_owned(),
            });
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

fn substitute(template: &str, values: &[(&str, &str)], html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match values.iter().find(|(k, _)| *k == name) {
            Some((_, value)) if html => escape_html(value, &mut out),
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_carry_the_code() {
        let mail = TemplateSet::default().render(None, "042137", 10, "a@example.com");
        assert_eq!(mail.subject, "Your verification code is 042137");
        assert!(mail.text.contains("042137") && mail.text.contains("10 minutes"));
        assert!(mail.html.contains("<strong>042137</strong>"));
    }

    #[test]
    fn overrides_per_locale_and_html_escaping() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("verification_code.subject"),
            "Code {{ code }}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("de")).unwrap();
        std::fs::write(
            dir.path().join("de/verification_code.html"),
            "<p>Ihr Code: {{code}} für {{to}}</p>",
        )
        .unwrap();
        let set = TemplateSet::load(dir.path()).unwrap();
        let mail = set.render(Some("de-AT"), "123456", 10, "<x>@example.com");
        assert_eq!(mail.subject, "Code 123456");
        assert_eq!(
            mail.html,
            "<p>Ihr Code: 123456 für &lt;x&gt;@example.com</p>"
        );
        assert_eq!(
            mail.text,
            TemplateSet::default().render(None, "123456", 10, "").text
        );
        let english = set.render(Some("en"), "123456", 10, "a@example.com");
        assert_eq!(
            english.html,
            TemplateSet::default()
                .render(None, "123456", 10, "a@example.com")
                .html
        );
    }

    #[test]
    fn unknown_placeholders_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verification_code.txt"), "{{cod}}").unwrap();
        let error = TemplateSet::load(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("unknown placeholder {{cod}}"),
            "{error}"
        );
        std::fs::write(dir.path().join("verification_code.txt"), "{{code").unwrap();
        assert!(matches!(
            TemplateSet::load(dir.path()),
            Err(TemplateError::Unclosed { .. })
        ));
    }
}
