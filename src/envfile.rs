//! Reads dotenv files, the format of the backend's `.env`.
//!
//! Supported: `KEY=value` lines, blank lines, `#` comments (whole-line, and after an unquoted
//! value when preceded by white space), an optional `export ` prefix, and values in single
//! quotes (taken literally) or double quotes (with `\"`, `\\`, `\n` escapes). No variable
//! expansion: a `$` is kept as it is, so a password containing one survives.
//!
//! Error messages name the file and line but never repeat a value: the file holds the
//! database password.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};

/// The variables of one dotenv file, each with the line that set it, for messages.
#[derive(Debug, Default)]
pub struct EnvFile {
    /// The file's path as given.
    pub path: String,
    vars: HashMap<String, (String, usize)>,
}

impl EnvFile {
    /// The value of `key`, if the file sets it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|(value, _)| value.as_str())
    }

    /// Where the file sets `key`: "PATH line N".
    pub fn origin(&self, key: &str) -> Option<String> {
        let (_, line) = self.vars.get(key)?;
        Some(format!("{} line {line}", self.path))
    }

    /// Every key the file sets, with its line, in line order.
    pub fn keys(&self) -> Vec<(&str, usize)> {
        let mut keys: Vec<(&str, usize)> = self
            .vars
            .iter()
            .map(|(key, (_, line))| (key.as_str(), *line))
            .collect();
        keys.sort_by_key(|(_, line)| *line);
        keys
    }
}

/// Reads and parses the dotenv file at `path`.
pub fn read(path: &Path) -> anyhow::Result<EnvFile> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read env file {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("env file {} is not valid UTF-8", path.display()))?;
    parse(&text, &path.display().to_string())
        .with_context(|| format!("env file {}", path.display()))
}

/// Parses dotenv text read from `path`; later assignments of the same key win, as in a shell.
pub fn parse(text: &str, path: &str) -> anyhow::Result<EnvFile> {
    let mut file = EnvFile {
        path: path.to_owned(),
        vars: HashMap::new(),
    };
    for (index, line) in text.lines().enumerate() {
        if let Some((key, value)) =
            parse_line(line).with_context(|| format!("line {}", index + 1))?
        {
            file.vars.insert(key, (value, index + 1));
        }
    }
    Ok(file)
}

fn parse_line(line: &str) -> anyhow::Result<Option<(String, String)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let Some((key, raw_value)) = line.split_once('=') else {
        bail!("expected KEY=value");
    };
    let key = key.trim();
    if !is_valid_key(key) {
        bail!("invalid variable name");
    }
    Ok(Some((key.to_owned(), parse_value(raw_value.trim())?)))
}

fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(raw: &str) -> anyhow::Result<String> {
    if let Some(rest) = raw.strip_prefix('\'') {
        let Some(end) = rest.find('\'') else {
            bail!("unterminated single quote");
        };
        ensure_only_comment(&rest[end + 1..])?;
        return Ok(rest[..end].to_owned());
    }
    if let Some(rest) = raw.strip_prefix('"') {
        return parse_double_quoted(rest);
    }
    let unquoted = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(comment) => &raw[..comment],
        None => raw,
    };
    Ok(unquoted.trim_end().to_owned())
}

fn parse_double_quoted(rest: &str) -> anyhow::Result<String> {
    let mut value = String::new();
    let mut chars = rest.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => {
                ensure_only_comment(&rest[index + 1..])?;
                return Ok(value);
            }
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            other => value.push(other),
        }
    }
    bail!("unterminated double quote")
}

fn ensure_only_comment(after_quote: &str) -> anyhow::Result<()> {
    let after_quote = after_quote.trim();
    if after_quote.is_empty() || after_quote.starts_with('#') {
        Ok(())
    } else {
        bail!("unexpected text after closing quote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_backend_env_format() {
        let vars = parse(
            "# database\n\
             \n\
             export DATABASE_URL=\"postgresql://u:p%40ss@db/astegni\"\n\
             SECRET='a$b \"c\"'\n\
             PLAIN=value # comment\n\
             ESCAPED=\"x\\\"y\\\\z\"\n\
             EMPTY=\n",
            ".env",
        )
        .unwrap();
        assert_eq!(
            vars.get("DATABASE_URL"),
            Some("postgresql://u:p%40ss@db/astegni")
        );
        assert_eq!(vars.get("SECRET"), Some("a$b \"c\""));
        assert_eq!(vars.get("PLAIN"), Some("value"));
        assert_eq!(vars.get("ESCAPED"), Some("x\"y\\z"));
        assert_eq!(vars.get("EMPTY"), Some(""));
        assert_eq!(vars.origin("SECRET").as_deref(), Some(".env line 4"));
        assert_eq!(vars.keys().first(), Some(&("DATABASE_URL", 3)));
    }

    #[test]
    fn errors_name_the_line_but_not_the_value() {
        let error = parse("OK=1\nDATABASE_URL='secret-password\n", ".env").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("secret-password"), "{message}");
    }

    #[test]
    fn rejects_lines_without_assignment() {
        assert!(parse("just words\n", ".env").is_err());
        assert!(parse("1KEY=x\n", ".env").is_err());
    }
}
