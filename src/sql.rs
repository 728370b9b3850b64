//! SQL identifiers that come from configuration or from the catalog: validated, then quoted.
//!
//! A table name given with `--role NAME=TABLE` ends up inside SQL text, because identifiers
//! cannot be bound as parameters. We accept only plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`,
//! at most 63 bytes, optionally `schema.table`) and always emit them double-quoted, so neither
//! a hostile name nor an accidental keyword can change a statement.
//!
//! Names read from the catalog (the tables and columns of foreign keys) are whatever someone
//! created: `"x""; DROP TABLE users; --"` is a valid table name. An [`Ident`] holds such a
//! name, checked to be one (not empty, no NUL, at most 63 bytes), and is only ever written
//! into SQL double-quoted with its quotes doubled, which PostgreSQL reads back as exactly
//! that name.

use std::fmt;

use anyhow::bail;

/// A validated, possibly schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// Validates `text` as `table` or `schema.table`.
    pub fn parse(text: &str) -> anyhow::Result<TableName> {
        let parts: Vec<&str> = text.split('.').collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (None, *name),
            [schema, name] => (Some(*schema), *name),
            _ => bail!("invalid table name {text:?}: expected table or schema.table"),
        };
        for part in schema.iter().chain([&name]) {
            if !is_plain_identifier(part) {
                bail!(
                    "invalid table name {text:?}: only letters, digits and underscores are \
                     allowed, starting with a letter or underscore, at most 63 characters"
                );
            }
        }
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The name as written in SQL: each part double-quoted.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An identifier read from the catalog.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    /// Checks that `name` can be a PostgreSQL identifier (NAMEDATALEN is 64).
    pub fn from_catalog(name: String) -> anyhow::Result<Ident> {
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            bail!("the catalog holds an identifier PostgreSQL cannot have: {name:?}");
        }
        Ok(Ident(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier as written in SQL: double-quoted, its own quotes doubled.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// Whether `text` is an identifier we accept without further thought.
pub fn is_plain_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 63
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_are_quoted() {
        assert_eq!(
            TableName::parse("tutor_profiles").unwrap().quoted(),
            "\"tutor_profiles\""
        );
        assert_eq!(
            TableName::parse("app.Tutor_Profiles").unwrap().quoted(),
            "\"app\".\"Tutor_Profiles\""
        );
    }

    #[test]
    fn catalog_names_are_quoted_whatever_they_hold() {
        let hostile = Ident::from_catalog("x\"; DROP TABLE users; --".to_owned()).unwrap();
        assert_eq!(hostile.quoted(), "\"x\"\"; DROP TABLE users; --\"");
        assert!(Ident::from_catalog(String::new()).is_err());
        assert!(Ident::from_catalog("a".repeat(64)).is_err());
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "users; drop table users",
            "x\"y",
            "a.b.c",
            "",
            "1abc",
            "tutor profiles",
            "tutor_profiles--",
            &"a".repeat(64),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
