//! Model names (`namespace/model:tag`), hub repository ids and relative file names, all validated
//! so that nothing a user or a hub supplies can point outside the store.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The tag a name without `:tag` refers to.
pub const DEFAULT_TAG: &str = "latest";

/// The namespace of a name written without one: `qwen` is `library/qwen`.
pub const DEFAULT_NAMESPACE: &str = "library";

/// The longest model, namespace or tag component.
const MAX_COMPONENT_LEN: usize = 96;

/// A validated model reference: `[namespace/]model[:tag]`.
///
/// Names are case-insensitive and kept lowercase. Each component (namespace, model, tag) is
/// 1 to 96 characters from `[a-z0-9._-]` and starts with a letter or digit, so `..`, hidden
/// files, absolute paths, backslashes and NUL can never reach the file system. A name without a
/// namespace lives in [`DEFAULT_NAMESPACE`]: `qwen` and `library/qwen` are the same model.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ModelRef {
    namespace: String,
    model: String,
    tag: String,
}

impl ModelRef {
    /// Parses `model`, `namespace/model`, either with `:tag` (default [`DEFAULT_TAG`]).
    pub fn parse(s: &str) -> Result<ModelRef> {
        let bad = |reason: &str| Error::InvalidName {
            name: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("the name is empty"));
        }
        if s.contains('\0') {
            return Err(bad("it contains a NUL byte"));
        }
        if s.contains('\\') {
            return Err(bad(
                "it contains a backslash; names use '/' between namespace and model",
            ));
        }
        if s.starts_with('/') {
            return Err(bad("it is an absolute path; a name is 'model' or 'namespace/model', optionally with ':tag'"));
        }
        let (name, tag) = match s.split_once(':') {
            Some((_, t)) if t.contains(':') => return Err(bad("it has more than one ':'")),
            Some((n, t)) => (n, t),
            None => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = name.split('/').collect();
        // Components first, so that `a/../b` is refused for its `..`, the real problem.
        for part in &parts {
            check_component(part, "name component").map_err(|r| bad(&r))?;
        }
        if parts.len() > 2 {
            return Err(bad(
                "it has more than one '/'; a name is 'model' or 'namespace/model'",
            ));
        }
        check_component(tag, "tag").map_err(|r| bad(&r))?;
        let (namespace, model) = match parts.as_slice() {
            [m] => (DEFAULT_NAMESPACE, *m),
            [ns, m] => (*ns, *m),
            _ => unreachable!("checked above"),
        };
        Ok(ModelRef {
            namespace: namespace.to_ascii_lowercase(),
            model: model.to_ascii_lowercase(),
            tag: tag.to_ascii_lowercase(),
        })
    }

    /// The same model with another tag (validated).
    pub fn with_tag(&self, tag: &str) -> Result<ModelRef> {
        check_component(tag, "tag").map_err(|reason| Error::InvalidName {
            name: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(ModelRef {
            tag: tag.to_ascii_lowercase(),
            ..self.clone()
        })
    }

    /// The name without the tag, short form: `qwen` for `library/qwen`, else `org/model`.
    pub fn name(&self) -> String {
        if self.namespace == DEFAULT_NAMESPACE {
            self.model.clone()
        } else {
            format!("{}/{}", self.namespace, self.model)
        }
    }

    /// The namespace (`library` when none was written).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The model component.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The manifest's place relative to the store root: `manifests/<namespace>/<model>/<tag>.json`.
    pub fn manifest_rel_path(&self) -> PathBuf {
        PathBuf::from("manifests")
            .join(&self.namespace)
            .join(&self.model)
            .join(format!("{}.json", self.tag))
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name(), self.tag)
    }
}

impl std::str::FromStr for ModelRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ModelRef> {
        ModelRef::parse(s)
    }
}

/// Checks one name component; the error is the reason.
fn check_component(part: &str, what: &str) -> std::result::Result<(), String> {
    if part.is_empty() {
        return Err(format!("it has an empty {what}"));
    }
    if part == "." || part == ".." {
        return Err(format!("{what} '{part}' would step outside the store"));
    }
    if part.len() > MAX_COMPONENT_LEN {
        return Err(format!(
            "{what} '{part}' is longer than {MAX_COMPONENT_LEN} characters"
        ));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} '{part}' contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    if !part.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("{what} '{part}' must start with a letter or digit"));
    }
    Ok(())
}

/// Checks a Hugging Face repository id: `org/name` or `name`, components from `[A-Za-z0-9._-]`.
pub fn validate_repo(repo: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidRepo {
        repo: repo.to_string(),
        reason,
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("expected 'org/name'".into()));
    }
    for part in parts {
        if part.is_empty() {
            return Err(bad("it has an empty component; expected 'org/name'".into()));
        }
        if part == "." || part == ".." {
            return Err(bad(format!("component '{part}' is not allowed")));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!("it contains {c:?}")));
        }
    }
    Ok(())
}

/// Checks a relative file name from a hub or a manifest (`model.safetensors`, `sub/dir/file`):
/// no absolute path, no `.`/`..`/empty component, no backslash, colon or control character.
pub fn validate_rel_filename(name: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidFileName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.starts_with('/') {
        return Err(bad("it is an absolute path"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(bad("it contains a control character"));
    }
    if name.contains('\\') || name.contains(':') {
        return Err(bad("it contains a backslash or ':'"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("it has an empty, '.' or '..' component"));
        }
        if part.len() > 255 {
            return Err(bad("a component is longer than 255 bytes"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let r = ModelRef::parse("Qwen").unwrap();
        assert_eq!(
            (r.namespace(), r.model(), r.tag()),
            ("library", "qwen", "latest")
        );
        assert_eq!(r.to_string(), "qwen:latest");
        let r = ModelRef::parse("org/Model-1.5B:Q4_K_M").unwrap();
        assert_eq!(r.to_string(), "org/model-1.5b:q4_k_m");
        assert_eq!(
            r.manifest_rel_path(),
            PathBuf::from("manifests/org/model-1.5b/q4_k_m.json")
        );
        assert_eq!(
            ModelRef::parse("library/qwen").unwrap(),
            ModelRef::parse("qwen:latest").unwrap()
        );
    }

    #[test]
    fn refuses_escapes_and_odd_characters() {
        for bad in [
            "", "../x", "/abs", "a/../b", "a\\b", "a/b/c", "a//b", "a/", ".hidden", "a:..", "a:",
            "a:b:c", "a\0b", "a b", "a/./b", "é", "-x", "x:-y",
        ] {
            let err = ModelRef::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidName { .. }),
                "{bad:?} gave {err}"
            );
        }
        let msg = ModelRef::parse("a/../b").unwrap_err().to_string();
        assert!(
            msg.contains("'..'") && msg.contains("outside the store"),
            "{msg}"
        );
    }

    #[test]
    fn repo_and_file_names() {
        validate_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF").unwrap();
        validate_repo("gpt2").unwrap();
        for bad in ["", "a/b/c", "../x", "a/..", "a b/c", "/a"] {
            assert!(validate_repo(bad).is_err(), "{bad:?}");
        }
        validate_rel_filename("model-00001-of-00002.safetensors").unwrap();
        validate_rel_filename("onnx/model.onnx").unwrap();
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a\\b",
            "c:x",
            "a//b",
            "a\nb",
        ] {
            assert!(validate_rel_filename(bad).is_err(), "{bad:?}");
        }
    }
}
