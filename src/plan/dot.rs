//! The deletion plans as a Graphviz DOT graph: tables as nodes, foreign keys as edges from
//! the referenced table to the referencing one (the way a deletion travels), labelled with
//! the constraint and its `ON DELETE` action; keys that block in red, keys the plan carries
//! out itself in orange, cascades in black, keys PostgreSQL sets to NULL in grey.

use std::collections::BTreeSet;

use super::{Plan, Treatment};

/// A DOT string literal: quotes and backslashes escaped, line breaks as DOT's `\n`.
fn quoted(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The graph of `plans`, each key drawn once.
pub fn render<'a>(plans: impl Iterator<Item = &'a Plan>) -> String {
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for plan in plans {
        if let Some(root) = plan.tables.first() {
            nodes.insert(format!(
                "  {} [style=bold, peripheries=2];\n",
                quoted(&root.display())
            ));
        }
        for edge in &plan.edges {
            let (color, style) = match edge.treatment {
                Treatment::Block(_) => ("red", "bold"),
                Treatment::Delete | Treatment::Nullify => ("orange", "bold"),
                Treatment::Cascade => ("black", "solid"),
                Treatment::Changed => ("grey", "dashed"),
            };
            let what = match edge.treatment {
                Treatment::Block(_) => " (blocks)",
                Treatment::Delete => " (deleted first)",
                Treatment::Nullify => " (nullified first)",
                _ => "",
            };
            let label = format!(
                "{}\n{}{what}",
                edge.key.name.as_str(),
                edge.key.on_delete.sql()
            );
            edges.insert(format!(
                "  {} -> {} [label={}, color={color}, fontcolor={color}, style={style}];\n",
                quoted(&edge.key.parent.display()),
                quoted(&edge.key.child.display()),
                quoted(&label)
            ));
        }
    }
    let mut dot = String::from(
        "digraph deletion_plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n  \
         edge [fontname=\"sans-serif\", fontsize=10];\n",
    );
    for node in nodes {
        dot.push_str(&node);
    }
    for edge in edges {
        dot.push_str(&edge);
    }
    dot.push_str("}\n");
    dot
}
