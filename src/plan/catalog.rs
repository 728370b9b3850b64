//! Every foreign key of the database, read from `pg_constraint` in one query: which table
//! and columns reference which, what `ON DELETE` does, whether the referencing columns may
//! be NULL and have an index, and how many rows the referencing table has.

use anyhow::Context;
use postgres::Client;

use crate::sql::Ident;

/// A table, by its catalog identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    pub schema: Ident,
    pub name: Ident,
    /// Whether `name` alone finds it (it is on the `search_path`).
    pub visible: bool,
}

impl Table {
    /// The name as written in SQL: each part quoted.
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }

    /// The name as people read it: without the schema when the `search_path` finds it.
    pub fn display(&self) -> String {
        if self.visible {
            self.name.as_str().to_owned()
        } else {
            format!("{}.{}", self.schema.as_str(), self.name.as_str())
        }
    }
}

/// What `ON DELETE` does to the referencing rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl OnDelete {
    fn from_code(code: &str) -> anyhow::Result<OnDelete> {
        Ok(match code {
            "a" => OnDelete::NoAction,
            "r" => OnDelete::Restrict,
            "c" => OnDelete::Cascade,
            "n" => OnDelete::SetNull,
            "d" => OnDelete::SetDefault,
            other => anyhow::bail!("unknown ON DELETE action {other:?} in pg_constraint"),
        })
    }

    /// As written in DDL.
    pub fn sql(self) -> &'static str {
        match self {
            OnDelete::NoAction => "NO ACTION",
            OnDelete::Restrict => "RESTRICT",
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
            OnDelete::SetDefault => "SET DEFAULT",
        }
    }
}

/// One referencing column.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: Ident,
    pub not_null: bool,
    /// Its default expression, if any, as `pg_get_expr` prints it.
    pub default: Option<String>,
}

/// One foreign key: `child (columns) REFERENCES parent (parent_columns) ON DELETE action`.
#[derive(Clone, Debug)]
pub struct ForeignKey {
    pub name: Ident,
    pub child: Table,
    pub columns: Vec<Column>,
    pub parent: Table,
    pub parent_columns: Vec<Ident>,
    /// The SQL types of the parent columns, for typed NULLs.
    pub parent_types: Vec<String>,
    pub on_delete: OnDelete,
    /// The columns `SET NULL`/`SET DEFAULT` changes (PostgreSQL 15's column list, else all).
    pub set_columns: Vec<Ident>,
    pub deferrable: bool,
    /// Whether an index of the child table starts with the referencing columns.
    pub indexed: bool,
    /// The child table's estimated row count.
    pub child_rows: i64,
}

impl ForeignKey {
    /// The referencing columns, quoted, as a list.
    pub fn column_list(&self) -> String {
        quoted_list(self.columns.iter().map(|column| &column.name))
    }

    pub fn parent_column_list(&self) -> String {
        quoted_list(self.parent_columns.iter())
    }

    /// `name: child (a, b) -> parent, ON DELETE action`, as people read it.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} -> {}, ON DELETE {}",
            self.name.as_str(),
            self.describe_columns(),
            self.parent.display(),
            self.on_delete.sql()
        )
    }

    /// `child (a, b)`, as people read it.
    pub fn describe_columns(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        format!("{} ({})", self.child.display(), names.join(", "))
    }

    /// Whether setting `set_columns` to NULL would violate a NOT NULL constraint.
    pub fn set_null_violates_not_null(&self) -> bool {
        self.columns
            .iter()
            .any(|column| column.not_null && self.set_columns.contains(&column.name))
    }
}

fn quoted_list<'a>(names: impl Iterator<Item = &'a Ident>) -> String {
    names.map(Ident::quoted).collect::<Vec<_>>().join(", ")
}

/// The catalog query. `confdelsetcols` exists from PostgreSQL 15 on; before, SET NULL and
/// SET DEFAULT change every referencing column. Foreign keys a partition inherits from its
/// partitioned table (`conparentid`) are the same key: only the parent's is read.
fn query(server_version: i32) -> String {
    let set_columns = if server_version >= 150_000 {
        "c.confdelsetcols"
    } else {
        "NULL::int2[]"
    };
    format!(
        "SELECT c.conname::text, c.confdeltype::text, c.condeferrable,
            cl.oid::bigint, cn.nspname::text, cl.relname::text, pg_table_is_visible(cl.oid),
            pl.oid::bigint, pn.nspname::text, pl.relname::text, pg_table_is_visible(pl.oid),
            ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                  ORDER BY k.i),
            ARRAY(SELECT a.attnotnull FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                  ORDER BY k.i),
            ARRAY(SELECT coalesce(pg_get_expr(d.adbin, d.adrelid), '')
                  FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                  LEFT JOIN pg_attrdef d ON d.adrelid = c.conrelid AND d.adnum = k.n
                  ORDER BY k.i),
            ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                  ORDER BY k.i),
            ARRAY(SELECT format_type(a.atttypid, a.atttypmod)
                  FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                  ORDER BY k.i),
            ARRAY(SELECT a.attname::text FROM unnest({set_columns}) AS s(n)
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = s.n),
            EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = c.conrelid AND i.indpred IS NULL
                    AND (string_to_array(i.indkey::text, ' ')::int2[])
                        [1:cardinality(c.conkey)] @> c.conkey
                    AND (string_to_array(i.indkey::text, ' ')::int2[])
                        [1:cardinality(c.conkey)] <@ c.conkey),
            greatest(cl.reltuples, 0)::bigint
         FROM pg_constraint c
         JOIN pg_class cl ON cl.oid = c.conrelid
         JOIN pg_namespace cn ON cn.oid = cl.relnamespace
         JOIN pg_class pl ON pl.oid = c.confrelid
         JOIN pg_namespace pn ON pn.oid = pl.relnamespace
         WHERE c.contype = 'f' AND c.conparentid = 0
         AND cn.nspname NOT IN ('pg_catalog', 'information_schema')
         ORDER BY cn.nspname, cl.relname, c.conname"
    )
}

/// Reads every foreign key of the database.
pub fn read(client: &mut Client) -> anyhow::Result<Vec<ForeignKey>> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .context("cannot read the server version")?
        .get(0);
    let rows = client
        .query(&query(version), &[])
        .context("cannot read the foreign keys from pg_constraint")?;
    rows.iter().map(foreign_key).collect()
}

fn table(row: &postgres::Row, first: usize) -> anyhow::Result<Table> {
    let oid: i64 = row.get(first);
    Ok(Table {
        oid: u32::try_from(oid).context("table oid out of range")?,
        schema: Ident::from_catalog(row.get(first + 1))?,
        name: Ident::from_catalog(row.get(first + 2))?,
        visible: row.get(first + 3),
    })
}

fn idents(names: Vec<String>) -> anyhow::Result<Vec<Ident>> {
    names.into_iter().map(Ident::from_catalog).collect()
}

fn foreign_key(row: &postgres::Row) -> anyhow::Result<ForeignKey> {
    let name = Ident::from_catalog(row.get(0))?;
    let on_delete = OnDelete::from_code(row.get(1))
        .with_context(|| format!("foreign key {}", name.as_str()))?;
    let names: Vec<String> = row.get(11);
    let not_null: Vec<bool> = row.get(12);
    let defaults: Vec<String> = row.get(13);
    let columns = names
        .into_iter()
        .zip(not_null)
        .zip(defaults)
        .map(|((name, not_null), default)| {
            Ok(Column {
                name: Ident::from_catalog(name)?,
                not_null,
                default: (!default.is_empty()).then_some(default),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut set_columns = idents(row.get(16))?;
    if set_columns.is_empty() {
        set_columns = columns.iter().map(|column| column.name.clone()).collect();
    }
    Ok(ForeignKey {
        name,
        child: table(row, 3)?,
        columns,
        parent: table(row, 7)?,
        parent_columns: idents(row.get(14))?,
        parent_types: row.get(15),
        on_delete,
        set_columns,
        deferrable: row.get(2),
        indexed: row.get(17),
        child_rows: row.get(18),
    })
}

/// The table `quoted_name` (as SQL writes it) finds, if any.
pub fn table_named(client: &mut Client, quoted_name: &str) -> anyhow::Result<Option<Table>> {
    let row = client
        .query_opt(
            "SELECT c.oid::bigint, n.nspname::text, c.relname::text, pg_table_is_visible(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1)",
            &[&quoted_name],
        )
        .with_context(|| format!("cannot look up table {}", quoted_name.replace('"', "")))?;
    row.map(|row| table(&row, 0)).transpose()
}

impl ForeignKey {
    /// The migration that makes the key do `on_delete` itself.
    pub fn migration(&self, on_delete: OnDelete) -> String {
        let deferrable = if self.deferrable { " DEFERRABLE" } else { "" };
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} FOREIGN KEY ({}) \
             REFERENCES {} ({}) ON DELETE {}{deferrable};",
            self.child.quoted(),
            self.name.quoted(),
            self.name.quoted(),
            self.column_list(),
            self.parent.quoted(),
            self.parent_column_list(),
            on_delete.sql()
        )
    }

    /// The index that lets PostgreSQL find the referencing rows of a deleted row.
    pub fn index_statement(&self) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY ON {} ({});",
            self.child.quoted(),
            self.column_list()
        )
    }
}
