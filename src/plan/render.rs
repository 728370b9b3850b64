//! A [`Plan`] as SQL: common table expressions that a statement puts after its own, over a
//! CTE `units(id)` of the units (ids of the root table) it is about.
//!
//! - `unit_rows(tid, id)`: the units' own rows.
//! - `d<t>(tid, root, k0, k1...)`, one per table `t` the SQL needs: the rows of `t` that
//!   deleting unit `root` removes (by a cascade or by the plan), with the columns keys on the
//!   path reference. Rows are told apart by `ctid`, which all CTEs of one statement read from
//!   the same snapshot. A table that reaches itself (a self-reference, a cycle) is computed by
//!   one recursive CTE per group of such tables, `r<n>`, whose rows carry a tag per table.
//!   Each unit's rows are computed on their own, so whether a unit is blocked never depends
//!   on which other units share its statement.
//! - `blockers(root, edge, n)`: per unit and blocking key, the referencing rows that the
//!   unit's deletion does not remove.
//! - `dependents(root, tab, n)`: per unit and table, the rows the plan deletes or nullifies
//!   first.
//! - [`carry_out`]: the plan's own DELETEs and UPDATEs for the units of a CTE `cleared(id)`.
//!
//! Only validated, quoted identifiers, numbers and the types `format_type` prints go into the
//! text; edges and tables are named by their index in the plan, never by their name.

use super::{Plan, Treatment};

/// `c.a` or `(c.a, c.b)`: columns of alias `alias`.
fn columns(alias: &str, names: &[String]) -> String {
    let list: Vec<String> = names.iter().map(|name| format!("{alias}.{name}")).collect();
    match list.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", list.join(", ")),
    }
}

/// The quoted referencing columns of edge `e`.
fn child_columns(plan: &Plan, e: usize) -> Vec<String> {
    plan.edges[e]
        .key
        .columns
        .iter()
        .map(|column| column.name.quoted())
        .collect()
}

/// The `k<i>` slots of the parent's reached rows that edge `e` references.
fn parent_slots(plan: &Plan, e: usize) -> Vec<String> {
    let edge = &plan.edges[e];
    let referenced = plan.referenced_columns(edge.parent);
    edge.key
        .parent_columns
        .iter()
        .map(|name| {
            let slot = referenced
                .iter()
                .position(|(known, _)| known == name)
                .unwrap_or_default();
            format!("k{slot}")
        })
        .collect()
}

/// `c.fk = p.k0`: the join of edge `e`'s referencing rows (alias `c`) with its parent's
/// reached rows (alias `p`).
fn join(plan: &Plan, e: usize, child: &str, parent: &str) -> String {
    format!(
        "{} = {}",
        columns(child, &child_columns(plan, e)),
        columns(parent, &parent_slots(plan, e))
    )
}

/// The referenced columns of table `t` as `c.col AS k0, ...` (with a leading comma).
fn key_columns(plan: &Plan, t: usize, alias: &str) -> String {
    plan.referenced_columns(t)
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!(", {alias}.{} AS k{i}", name.quoted()))
        .collect()
}

/// Every CTE of the plan but the carrying out: `unit_rows`, the reached rows, `blockers`
/// and `dependents`, each followed by a comma.
pub fn ctes(plan: &Plan) -> String {
    let root = plan.tables[0].quoted();
    let mut sql = format!(
        "unit_rows AS MATERIALIZED (SELECT t.ctid AS tid, t.id::bigint AS id FROM {root} t \
         WHERE t.id = ANY (ARRAY(SELECT id FROM units))), "
    );
    for (n, component) in plan.components.iter().enumerate() {
        if plan.is_recursive(component) {
            sql.push_str(&recursive(plan, n, component));
        } else {
            sql.push_str(&reached(plan, component[0]));
        }
    }
    sql.push_str(&blockers(plan));
    sql.push_str(&nullified(plan));
    sql.push_str(&dependents(plan));
    sql
}

/// [`ctes`] without the comma after the last.
fn ctes_alone(plan: &Plan) -> String {
    let mut sql = ctes(plan);
    sql.truncate(sql.trim_end().trim_end_matches(',').len());
    sql
}

/// The rows of the root table for the units themselves, in the shape of `d0`.
fn root_rows(plan: &Plan) -> String {
    format!(
        "SELECT t.ctid AS tid, t.id::bigint AS root{} FROM {} t \
         WHERE t.id = ANY (ARRAY(SELECT id FROM unit_rows))",
        key_columns(plan, 0, "t"),
        plan.tables[0].quoted()
    )
}

/// `d<t>` for a table that does not reach itself.
fn reached(plan: &Plan, t: usize) -> String {
    let mut parts = Vec::new();
    if t == 0 {
        parts.push(root_rows(plan));
    }
    for (e, edge) in plan.deleting_edges_into(t) {
        parts.push(format!(
            "SELECT c.ctid AS tid, p.root{} FROM {} c JOIN d{} p ON {}",
            key_columns(plan, t, "c"),
            plan.tables[t].quoted(),
            edge.parent,
            join(plan, e, "c", "p")
        ));
    }
    format!("d{t} AS MATERIALIZED ({}), ", parts.join(" UNION "))
}

/// `r<n>` and the `d<t>` of its tables, for a component that reaches itself.
fn recursive(plan: &Plan, n: usize, component: &[usize]) -> String {
    let tag = |t: usize| component.iter().position(|&c| c == t).unwrap_or_default();
    // Each table of the component has its own key slots in the rows: `t<tag>k<i>`.
    let slots: Vec<(usize, usize, String)> = component
        .iter()
        .flat_map(|&t| {
            plan.referenced_columns(t)
                .into_iter()
                .enumerate()
                .map(move |(i, (_, type_name))| (t, i, type_name))
        })
        .collect();
    let slot_names: Vec<String> = slots
        .iter()
        .map(|(t, i, _)| format!("t{}k{i}", tag(*t)))
        .collect();
    // The values of every slot for a row of table `t` read through alias `alias`.
    let values = |t: usize, alias: &str| -> String {
        let names = plan.referenced_columns(t);
        slots
            .iter()
            .map(|(owner, i, type_name)| {
                if *owner == t {
                    format!(", {alias}.{}", names[*i].0.quoted())
                } else {
                    format!(", NULL::{type_name}")
                }
            })
            .collect()
    };
    let mut base = Vec::new();
    if component.contains(&0) {
        base.push(format!(
            "SELECT {}, t.ctid, t.id::bigint{} FROM {} t \
             WHERE t.id = ANY (ARRAY(SELECT id FROM unit_rows))",
            tag(0),
            values(0, "t"),
            plan.tables[0].quoted()
        ));
    }
    let mut inner = Vec::new();
    for &t in component {
        for (e, edge) in plan.deleting_edges_into(t) {
            let table = plan.tables[t].quoted();
            if component.contains(&edge.parent) {
                let parent_slots: Vec<String> = parent_slots(plan, e)
                    .iter()
                    .map(|slot| format!("t{}{slot}", tag(edge.parent)))
                    .collect();
                inner.push(format!(
                    "SELECT {}, c.ctid, w.root{} FROM {table} c WHERE w.tag = {} AND {} = {}",
                    tag(t),
                    values(t, "c"),
                    tag(edge.parent),
                    columns("c", &child_columns(plan, e)),
                    columns("w", &parent_slots)
                ));
            } else {
                base.push(format!(
                    "SELECT {}, c.ctid, p.root{} FROM {table} c JOIN d{} p ON {}",
                    tag(t),
                    values(t, "c"),
                    edge.parent,
                    join(plan, e, "c", "p")
                ));
            }
        }
    }
    let mut sql = format!(
        "r{n} AS MATERIALIZED (WITH RECURSIVE w(tag, tid, root{}) AS ({} UNION \
         SELECT x.* FROM w, LATERAL ({}) x) SELECT * FROM w), ",
        slot_names
            .iter()
            .map(|s| format!(", {s}"))
            .collect::<String>(),
        base.join(" UNION "),
        inner.join(" UNION ALL ")
    );
    for &t in component {
        let keys: String = plan
            .referenced_columns(t)
            .iter()
            .enumerate()
            .map(|(i, _)| format!(", t{}k{i} AS k{i}", tag(t)))
            .collect();
        sql.push_str(&format!(
            "d{t} AS MATERIALIZED (SELECT tid, root{keys} FROM r{n} WHERE tag = {}), ",
            tag(t)
        ));
    }
    sql
}

/// Rows of edge `e`'s table that reference unit `p.root`'s reached rows and that the
/// unit's deletion does not remove: `SELECT c.ctid AS tid, p.root ...`.
fn referencing_not_reached(plan: &Plan, e: usize) -> String {
    let edge = &plan.edges[e];
    let outside = if plan.deleted_from.contains(&edge.child) {
        format!(
            " WHERE NOT EXISTS (SELECT 1 FROM d{} x WHERE x.root = p.root AND x.tid = c.ctid)",
            edge.child
        )
    } else {
        String::new()
    };
    format!(
        "SELECT c.ctid AS tid, p.root FROM {} c JOIN d{} p ON {}{outside}",
        plan.tables[edge.child].quoted(),
        edge.parent,
        join(plan, e, "c", "p")
    )
}

fn blockers(plan: &Plan) -> String {
    let parts: Vec<String> = plan
        .blocking_edges()
        .map(|(e, _)| {
            format!(
                "SELECT b.root, {e} AS edge, count(*) AS n FROM ({}) b GROUP BY b.root",
                referencing_not_reached(plan, e)
            )
        })
        .collect();
    if parts.is_empty() {
        return "blockers AS MATERIALIZED (SELECT NULL::bigint AS root, NULL::int AS edge, \
                NULL::bigint AS n WHERE FALSE), "
            .to_owned();
    }
    format!("blockers AS MATERIALIZED ({}), ", parts.join(" UNION ALL "))
}

/// The edges the plan nullifies itself (the requests' own key excepted: the unit's
/// statement does that).
fn nullify_edges(plan: &Plan) -> Vec<usize> {
    plan.edges
        .iter()
        .enumerate()
        .filter(|(e, edge)| edge.treatment == Treatment::Nullify && Some(*e) != plan.requests_edge)
        .map(|(e, _)| e)
        .collect()
}

/// `n<e>(tid, root)` per nullified edge: the rows whose columns the plan sets to NULL.
fn nullified(plan: &Plan) -> String {
    nullify_edges(plan)
        .into_iter()
        .map(|e| {
            format!(
                "n{e} AS MATERIALIZED ({}), ",
                referencing_not_reached(plan, e)
            )
        })
        .collect()
}

/// Per unit and table, the rows the plan deletes or nullifies first (and, in an account
/// plan, the requests the unit's statement deletes or nullifies).
fn dependents(plan: &Plan) -> String {
    let mut parts: Vec<String> = plan
        .deleted_first()
        .into_iter()
        .map(|t| {
            let own = if t == 0 {
                " WHERE d.tid NOT IN (SELECT tid FROM unit_rows)"
            } else {
                ""
            };
            format!("SELECT d.root, {t} AS tab, count(*) AS n FROM d{t} d{own} GROUP BY d.root")
        })
        .collect();
    for e in nullify_edges(plan) {
        parts.push(format!(
            "SELECT x.root, {} AS tab, count(*) AS n FROM n{e} x GROUP BY x.root",
            plan.edges[e].child
        ));
    }
    if let Some(e) = plan.requests_edge {
        let edge = &plan.edges[e];
        let rows = if edge.treatment == Treatment::Nullify {
            referencing_not_reached(plan, e)
        } else {
            format!("SELECT tid, root FROM d{}", edge.child)
        };
        parts.push(format!(
            "SELECT x.root, {} AS tab, count(*) AS n FROM ({rows}) x GROUP BY x.root",
            edge.child
        ));
    }
    if parts.is_empty() {
        return "dependents AS MATERIALIZED (SELECT NULL::bigint AS root, NULL::int AS tab, \
                NULL::bigint AS n WHERE FALSE), "
            .to_owned();
    }
    format!(
        "dependents AS MATERIALIZED (SELECT root, tab, sum(n)::bigint AS n FROM ({}) x \
         GROUP BY root, tab), ",
        parts.join(" UNION ALL ")
    )
}

/// The plan's own deletes and updates for the units of CTE `cleared(id)`: CTEs, each
/// preceded by a comma. The units' own rows are left to the unit's statement.
pub fn carry_out(plan: &Plan) -> String {
    let mut sql = String::new();
    for t in plan.deleted_first() {
        let own = if t == 0 {
            " AND d.tid NOT IN (SELECT tid FROM unit_rows)"
        } else {
            ""
        };
        sql.push_str(&format!(
            ", x{t} AS (DELETE FROM {} c WHERE c.ctid = ANY (ARRAY(SELECT d.tid FROM d{t} d \
             WHERE d.root IN (SELECT id FROM cleared){own})))",
            plan.tables[t].quoted()
        ));
    }
    let edges = nullify_edges(plan);
    let mut tables: Vec<usize> = edges.iter().map(|&e| plan.edges[e].child).collect();
    tables.sort_unstable();
    tables.dedup();
    for t in tables {
        let of_table: Vec<usize> = edges
            .iter()
            .copied()
            .filter(|&e| plan.edges[e].child == t)
            .collect();
        let rows =
            |e: usize| format!("SELECT tid FROM n{e} WHERE root IN (SELECT id FROM cleared)");
        // One UPDATE per table (two on the same row in one statement would lose one), one
        // assignment per column, whichever keys share it.
        let mut by_column: Vec<(String, Vec<String>)> = Vec::new();
        for &e in &of_table {
            for column in &plan.edges[e].key.columns {
                let name = column.name.quoted();
                match by_column.iter_mut().find(|(known, _)| *known == name) {
                    Some((_, sources)) => sources.push(rows(e)),
                    None => by_column.push((name, vec![rows(e)])),
                }
            }
        }
        let assignments: Vec<String> = by_column
            .iter()
            .map(|(name, sources)| {
                format!(
                    "{name} = CASE WHEN c.ctid IN ({}) THEN NULL ELSE c.{name} END",
                    sources.join(" UNION ")
                )
            })
            .collect();
        let all: Vec<String> = of_table.iter().map(|&e| rows(e)).collect();
        sql.push_str(&format!(
            ", y{t} AS (UPDATE {} c SET {} WHERE c.ctid IN ({}))",
            plan.tables[t].quoted(),
            assignments.join(", "),
            all.join(" UNION ")
        ));
    }
    sql
}

/// Per unit of `unit_info` (a query of `id, user_id, email` over CTE `units`): ('unit', id,
/// user id, email, the blocking edges, their row counts, the tables of dependents, their
/// row counts), the arrays NULL when empty.
pub fn outcomes(unit_info: &str) -> String {
    format!(
        "SELECT 'unit'::text AS kind, i.id, i.user_id, i.email, b.edges, b.counts, d.tabs, \
         d.tab_counts FROM ({unit_info}) i \
         LEFT JOIN (SELECT root, array_agg(edge ORDER BY edge) AS edges, \
         array_agg(n ORDER BY edge) AS counts FROM blockers GROUP BY root) b ON b.root = i.id \
         LEFT JOIN (SELECT root, array_agg(tab ORDER BY tab) AS tabs, \
         array_agg(n ORDER BY tab) AS tab_counts FROM dependents GROUP BY root) d \
         ON d.root = i.id"
    )
}

/// A read-only query of the outcomes of deleting the units of `units` (a query of ids),
/// ordered by id: what a dry run and `check` report. Parameters as in `units`.
pub fn preview(plan: &Plan, units: &str, unit_info: &str) -> String {
    format!(
        "WITH units AS MATERIALIZED ({units}), {} {} ORDER BY 2",
        ctes_alone(plan),
        outcomes(unit_info)
    )
}

/// A read-only query of (edge, units blocked) for the units of `units`: how many of them
/// each blocking key blocks.
pub fn blocked_counts(plan: &Plan, units: &str) -> String {
    format!(
        "WITH units AS MATERIALIZED ({units}), {} SELECT edge, count(DISTINCT root) \
         FROM blockers GROUP BY edge ORDER BY edge",
        ctes_alone(plan)
    )
}
