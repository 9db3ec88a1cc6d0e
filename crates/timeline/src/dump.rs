//! `Projection::dump_for_comparison`: a deterministic text rendering of every table, so
//! two projections (one built incrementally, one rebuilt from the stream; one per
//! gateway) can be compared line by line by tests and by the CLI.
//!
//! It renders stored values, not domain types, so it also catches differences the
//! queries would hide.

use std::fmt::Write as _;

use rusqlite::types::ValueRef;

use casebus_integrity::EventHash;

use crate::error::{QueryError, query};
use crate::projection::Projection;

/// Each table with the order that makes its rendering deterministic (its key).
const TABLES: &[(&str, &str)] = &[
    ("schema_version", "version"),
    ("position", "id"),
    ("events", "stream_sequence"),
    ("cases", "case_id"),
    ("tracks", "case_id, agency"),
    ("parties", "case_id, party_id"),
    ("handoffs", "case_id, handoff_id"),
    ("case_clocks", "case_id, clock, subject"),
    (
        "case_references",
        "agency, local_number, case_id, office_id",
    ),
    ("participants", "case_id, agency"),
];

/// Blobs up to this size are shown in hex; longer ones (the signed events) as the
/// SHA-256 of their bytes, which keeps dumps small and still detects any difference.
const MAX_HEX_BLOB: usize = 32;

fn render(out: &mut String, value: ValueRef<'_>) {
    // Writing to a String cannot fail.
    let _ = match value {
        ValueRef::Null => write!(out, "NULL"),
        ValueRef::Integer(i) => write!(out, "{i}"),
        ValueRef::Real(r) => write!(out, "{r:?}"),
        ValueRef::Text(t) => write!(out, "{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) if b.len() <= MAX_HEX_BLOB => {
            out.push_str("x'");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            write!(out, "'")
        }
        ValueRef::Blob(b) => write!(out, "sha256:{}", EventHash::of(b).to_hex()),
    };
}

impl Projection {
    /// Every row of every table as text, one line per row, tables and rows in a fixed
    /// order: `table|column=value|...`. Two projections of the same stream position
    /// have identical dumps. Meant for comparisons, not for display: a large
    /// projection gives a large dump.
    ///
    /// # Errors
    /// [`QueryError::Storage`] when SQLite fails.
    pub fn dump_for_comparison(&self) -> Result<String, QueryError> {
        let op = "dumping the projection";
        // One snapshot for all tables.
        let tx = self.conn.unchecked_transaction().map_err(query(op))?;
        let mut out = String::new();
        for (table, order) in TABLES {
            let mut stmt = tx
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .map_err(query(op))?;
            let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
            let mut rows = stmt.query([]).map_err(query(op))?;
            while let Some(row) = rows.next().map_err(query(op))? {
                out.push_str(table);
                for (index, column) in columns.iter().enumerate() {
                    out.push('|');
                    out.push_str(column);
                    out.push('=');
                    render(&mut out, row.get_ref(index).map_err(query(op))?);
                }
                out.push('\n');
            }
        }
        drop(tx);
        Ok(out)
    }
}
