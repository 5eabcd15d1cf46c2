//! kubetrail's query language, the one language of the CLI, the HTTP API, the web UI, monitors
//! and detections (`docs/query-language.md`):
//!
//! ```text
//! verb:(create OR update OR patch OR delete) -user:system:* code>=400 | stats count() by user
//! ```
//!
//! Queries are parsed into an AST ([`parse`]), then either compiled to SQL for a store through
//! a dialect ([`compile`]; values always travel as parameters, never inside the SQL text) or
//! evaluated on one event in memory ([`Matcher`]; exclusion filters, detections).
//! Pure: no IO.

mod ast;
mod error;
mod fields;
mod index;
mod lexer;
mod limits;
mod matcher;
mod parser;
mod sql;

pub use ast::{AggFunc, Aggregate, Expr, Literal, Pattern, Pipe, Query, SortKey, ValueSet};
pub use error::QueryError;
pub use fields::{
    CONTAINER_LISTS, Column, FIELDS, Field, FieldDef, FieldKind, JsonColumn, POD_FIELDS,
    POD_SPEC_ROOTS, PodFieldDef, parse_duration_micros, pod_spec_root,
};
pub use index::FilterIndex;
pub use lexer::CompareOp;
pub use limits::QueryLimits;
pub use matcher::{
    EventView, Evidence, Matcher, Value, field_value, uri_param_values, value_of, wildcard_match,
};
pub use parser::{parse, parse_with};
pub use sql::{
    CompileOptions, CompiledSql, DEFAULT_FIELDS, DataFusionDialect, Dialect, Param, PartialKind,
    Partials, SEARCH_COLUMNS, SearchCursor, compile, compile_extent, compile_partials,
    compile_scan, compile_search, compile_search_times,
};
