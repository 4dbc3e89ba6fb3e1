//! The `.env` file that can supply the controller's environment variables.

use std::path::Path;

use anyhow::Context as _;

/// A line of a `.env` file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DotenvError {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses the text of a `.env` file: `KEY=VALUE` lines, optionally prefixed by `export `; blank
/// lines and lines starting with `#` are skipped. A value may be wrapped in single quotes (taken
/// literally) or double quotes (where `\n`, `\"` and `\\` are escapes); an unquoted value ends at
/// ` #` (a comment) and is trimmed.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut vars = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let fail = |reason| DotenvError {
            line: index + 1,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = line.split_once('=').ok_or(fail("expected KEY=VALUE"))?;
        let key = key.trim();
        if !is_env_key(key) {
            return Err(fail(
                "the key must be letters, digits and '_', not starting with a digit",
            ));
        }
        let value = parse_dotenv_value(value.trim()).map_err(fail)?;
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

fn is_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_dotenv_value(value: &str) -> Result<String, &'static str> {
    let after_quoted = |rest: &str| -> Result<(), &'static str> {
        let rest = rest.trim();
        if rest.is_empty() || rest.starts_with('#') {
            Ok(())
        } else {
            Err("unexpected text after the closing quote")
        }
    };
    if let Some(body) = value.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated single quote")?;
        after_quoted(&body[end + 1..])?;
        return Ok(body[..end].to_string());
    }
    if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    after_quoted(&body[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, other)) => out.push(other),
                    None => break,
                },
                other => out.push(other),
            }
        }
        return Err("unterminated double quote");
    }
    let value = match value.find(" #") {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(value.trim_end().to_string())
}

/// Reads `path` (when it exists) and sets each variable it defines that is not already set, so
/// the environment wins over the file. Returns the names it set.
///
/// Call it before any other thread starts: it changes the process environment.
pub fn load_dotenv(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let vars = parse_dotenv(&text).with_context(|| format!("parse {}", path.display()))?;
    let mut set = Vec::new();
    for (key, value) in vars {
        if std::env::var_os(&key).is_none() {
            std::env::set_var(&key, value);
            set.push(key);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dotenv_reads_plain_exported_and_quoted_values() {
        let text = "\
# a comment
TOYGRES_HOME=/var/lib/toygres

export TOYGRES_LISTEN = 0.0.0.0:7700   # trailing comment
DATABASE_URL='postgres://u:p#w@db/cms'
GREETING=\"hello \\\"world\\\"\\nbye\"
EMPTY=
";
        let vars = parse_dotenv(text).unwrap();
        assert_eq!(
            vars,
            vec![
                ("TOYGRES_HOME".into(), "/var/lib/toygres".into()),
                ("TOYGRES_LISTEN".into(), "0.0.0.0:7700".into()),
                ("DATABASE_URL".into(), "postgres://u:p#w@db/cms".into()),
                ("GREETING".into(), "hello \"world\"\nbye".into()),
                ("EMPTY".into(), String::new()),
            ]
        );
    }

    #[test]
    fn dotenv_keeps_hash_inside_an_unquoted_value() {
        let vars = parse_dotenv("URL=http://x/#anchor").unwrap();
        assert_eq!(vars, vec![("URL".into(), "http://x/#anchor".into())]);
    }

    #[test]
    fn dotenv_reports_the_line_of_a_bad_entry() {
        assert_eq!(
            parse_dotenv("A=1\nnot a pair\n").unwrap_err(),
            DotenvError {
                line: 2,
                reason: "expected KEY=VALUE"
            }
        );
        assert_eq!(parse_dotenv("1A=x").unwrap_err().line, 1);
        assert_eq!(
            parse_dotenv("A=\"open").unwrap_err().reason,
            "unterminated double quote"
        );
        assert_eq!(
            parse_dotenv("A='x' y").unwrap_err().reason,
            "unexpected text after the closing quote"
        );
    }

    #[test]
    fn dotenv_does_not_override_variables_already_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "TOYGRES_TEST_DOTENV_SET=from-file\nTOYGRES_TEST_DOTENV_NEW=from-file\n",
        )
        .unwrap();
        // Names only this test uses, so changing them cannot disturb other tests.
        std::env::set_var("TOYGRES_TEST_DOTENV_SET", "from-env");
        let set = load_dotenv(&path).unwrap();
        assert_eq!(set, vec!["TOYGRES_TEST_DOTENV_NEW".to_string()]);
        assert_eq!(
            std::env::var("TOYGRES_TEST_DOTENV_SET").unwrap(),
            "from-env"
        );
        assert_eq!(
            std::env::var("TOYGRES_TEST_DOTENV_NEW").unwrap(),
            "from-file"
        );
        assert!(load_dotenv(&dir.path().join("missing")).unwrap().is_empty());
    }
}
