//! Query plans: the tree the binder builds from a statement, the optimizer rewrites, and the
//! executor runs node for node.
//!
//! Every node produces rows of a fixed width; an expression in a node refers to its input's
//! columns by position ([`Expr::Column`]). A join's row is its left input's columns followed
//! by its right input's. The same tree carries the optimizer's physical choices (a scan's key
//! spans, a join's algorithm, a scan's limit hint), so `EXPLAIN` prints exactly what runs
//! ([`explain`]).
//!
//! Expressions in a plan are pure: subqueries were turned into [`Plan::Apply`] inputs that
//! append their values as columns, and aggregate calls into [`Plan::Aggregate`] outputs.
//! Outer references ([`Expr::Outer`]) appear only inside a correlated subquery's plan and are
//! replaced by constants ([`Plan::bind_outer`]) before it runs.

pub mod explain;

use std::sync::Arc;

use crate::catalog::Table;
use crate::expr::Expr;
use crate::types::SqlType;

/// A query plan node.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Rows of a table, read over `spans` (chosen by the optimizer), filtered by `filter`.
    Scan(Scan),
    /// Literal rows (`VALUES`, and the single empty row of a FROM-less SELECT).
    Values {
        rows: Vec<Vec<Expr>>,
        width: usize,
    },
    /// `generate_series(start, stop, step)`: integers.
    Series {
        start: Expr,
        stop: Expr,
        step: Expr,
        name: String,
    },
    /// No rows (a filter that is never true, `LIMIT 0`).
    Empty {
        width: usize,
    },
    Filter {
        input: Box<Plan>,
        predicate: Expr,
    },
    Project {
        input: Box<Plan>,
        exprs: Vec<Expr>,
        names: Vec<String>,
    },
    Join {
        left: Box<Plan>,
        right: Box<Plan>,
        kind: JoinKind,
        /// The join condition over the left row followed by the right row.
        on: Option<Expr>,
        algorithm: JoinAlgorithm,
    },
    /// Groups by `group_by` and computes `aggregates` per group: rows of the group values
    /// followed by the aggregate values. Without `group_by`, exactly one row.
    Aggregate {
        input: Box<Plan>,
        group_by: Vec<Expr>,
        aggregates: Vec<AggregateCall>,
    },
    /// Removes duplicate rows (NULLs are equal here).
    Distinct {
        input: Box<Plan>,
    },
    Sort {
        input: Box<Plan>,
        keys: Vec<SortKey>,
        /// Only this many first rows are wanted (a LIMIT above): a top-N sort, which holds
        /// about twice that many rows instead of its whole input.
        top: Option<u64>,
    },
    Limit {
        input: Box<Plan>,
        limit: Option<u64>,
        offset: u64,
    },
    SetOp {
        op: SetOpKind,
        all: bool,
        left: Box<Plan>,
        right: Box<Plan>,
    },
    /// Appends one column per subquery to each input row: the subquery's value for it.
    Apply {
        input: Box<Plan>,
        subqueries: Vec<SubqueryDef>,
    },
}

/// A table scan.
#[derive(Clone, Debug)]
pub struct Scan {
    pub table: Arc<Table>,
    /// The name the query gave the table (its alias, else its name).
    pub qualifier: String,
    pub filter: Option<Expr>,
    /// Over the primary key's key space, or the index's of `index`.
    pub spans: Spans,
    /// Read through this index (the optimizer's choice): entries over `spans`, then their
    /// rows.
    pub index: Option<IndexAccess>,
    /// `SELECT … FOR UPDATE`: lock each row read (re-checking `filter` on a newer version).
    pub lock: bool,
    /// At most this many rows will be pulled (LIMIT + OFFSET above with nothing between
    /// that drops rows): the first page read is no larger.
    pub limit_hint: Option<u64>,
}

/// A scan through a secondary index.
#[derive(Clone, Debug)]
pub struct IndexAccess {
    pub index: crate::catalog::Index,
    /// Index-only: every column the query needs is in the entries (the index's columns and
    /// the primary key), so the rows are not read.
    pub only: bool,
}

/// What part of a table's primary key space (or an index's) a scan reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Spans {
    /// The whole table.
    Full,
    /// Single rows by their full primary key, in key order, without duplicates.
    Points { keys: Vec<Vec<u8>>, shown: String },
    /// Key ranges `[start, end)`, sorted and disjoint.
    Ranges {
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        shown: String,
    },
    /// Nothing can match (`id = NULL`, contradictory bounds).
    Nothing,
}

impl Spans {
    /// The same spans with points read as the ranges of keys they prefix (an index's
    /// entries carry more after the values: the primary key).
    pub fn into_prefix_ranges(self) -> Spans {
        match self {
            Spans::Points { keys, shown } => Spans::Ranges {
                ranges: keys
                    .into_iter()
                    .map(|key| {
                        let end = kv::codec::memcomparable::prefix_end(&key).unwrap_or_default();
                        (key, end)
                    })
                    .collect(),
                shown,
            },
            other => other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    pub fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "inner",
            JoinKind::Left => "left",
            JoinKind::Right => "right",
            JoinKind::Full => "full",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum JoinAlgorithm {
    /// Every left row against every right row (the right side is held in memory).
    NestedLoop,
    /// The right side in a hash table on `right_keys`, probed with `left_keys` of each left
    /// row; `on` is still checked on each pair found (it includes the key equalities).
    Hash {
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
    },
    /// The right side is a table whose whole primary key the condition equates with
    /// `left_keys` (one per key column, in key order): for each batch of left rows, the
    /// matching right rows are read by point gets instead of scanning the table (the right
    /// scan's filter still applies to them).
    Lookup { left_keys: Vec<Expr> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOpKind {
    Union,
    Intersect,
    Except,
}

impl SetOpKind {
    pub fn name(self) -> &'static str {
        match self {
            SetOpKind::Union => "UNION",
            SetOpKind::Intersect => "INTERSECT",
            SetOpKind::Except => "EXCEPT",
        }
    }
}

/// A sort key: a column of the input.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// The aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateFn {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    BoolAnd,
    BoolOr,
    StringAgg,
}

impl AggregateFn {
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::CountStar | AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
            AggregateFn::BoolAnd => "bool_and",
            AggregateFn::BoolOr => "bool_or",
            AggregateFn::StringAgg => "string_agg",
        }
    }
}

/// An aggregate call: its arguments are expressions over the aggregation's input.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateCall {
    pub func: AggregateFn,
    pub args: Vec<Expr>,
    pub arg_type: Option<SqlType>,
    pub distinct: bool,
    /// `FILTER (WHERE …)`: only rows for which it is true are aggregated.
    pub filter: Option<Expr>,
    pub result_type: SqlType,
}

/// What a subquery in an expression computes per row.
#[derive(Clone, Debug)]
pub enum SubqueryKind {
    /// Its single value (NULL without rows; 21000 with more than one).
    Scalar,
    /// Whether it has a row.
    Exists,
    /// `operand op ANY|ALL (subquery)` (`all`), possibly under NOT (`negated`), with SQL's
    /// NULL semantics; `IN` is `= ANY` and `NOT IN` its negation.
    In {
        operand: Expr,
        op: crate::expr::CmpOp,
        all: bool,
        negated: bool,
        blank_padded: bool,
    },
}

/// A subquery used in an expression, computed by [`Plan::Apply`].
#[derive(Clone, Debug)]
pub struct SubqueryDef {
    pub plan: Plan,
    pub kind: SubqueryKind,
    /// Whether it refers to the row it is computed for (else it runs once).
    pub correlated: bool,
    /// Set by decorrelation (see [`crate::optimizer`]'s `decorrelate`): the subquery runs
    /// once, its rows end with one key column per expression here, and a row's value is
    /// computed from the subquery rows whose keys equal these expressions over the row (no
    /// rows if one of them is NULL). Empty otherwise.
    pub outer_keys: Vec<Expr>,
    /// With `outer_keys`: the subquery's rows for an outer row whose key has no rows (or a
    /// NULL), when that is not simply no rows: over an aggregate, the aggregate's one row
    /// over no input (`count(*)` is 0).
    pub missing: Option<Box<Plan>>,
}

impl Plan {
    /// The number of columns of each row.
    pub fn width(&self) -> usize {
        match self {
            Plan::Scan(scan) => scan.table.columns.len(),
            Plan::Values { width, .. } | Plan::Empty { width } => *width,
            Plan::Series { .. } => 1,
            Plan::Project { exprs, .. } => exprs.len(),
            Plan::Join { left, right, .. } => left.width() + right.width(),
            Plan::Aggregate {
                group_by,
                aggregates,
                ..
            } => group_by.len() + aggregates.len(),
            Plan::Filter { input, .. }
            | Plan::Distinct { input }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. } => input.width(),
            Plan::SetOp { left, .. } => left.width(),
            Plan::Apply { input, subqueries } => input.width() + subqueries.len(),
        }
    }

    /// Column names, for EXPLAIN.
    pub fn column_names(&self) -> Vec<String> {
        match self {
            Plan::Scan(scan) => scan
                .table
                .columns
                .iter()
                .map(|c| format!("{}.{}", scan.qualifier, c.name))
                .collect(),
            Plan::Values { width, .. } => (1..=*width).map(|i| format!("column{i}")).collect(),
            Plan::Empty { width } => (1..=*width).map(|i| format!("column{i}")).collect(),
            Plan::Series { name, .. } => vec![name.clone()],
            Plan::Project { names, .. } => names.clone(),
            Plan::Join { left, right, .. } => {
                let mut names = left.column_names();
                names.extend(right.column_names());
                names
            }
            Plan::Aggregate {
                input,
                group_by,
                aggregates,
            } => {
                let input_names = input.column_names();
                let mut names: Vec<String> = group_by
                    .iter()
                    .map(|e| explain::expr_text(e, &input_names))
                    .collect();
                names.extend(
                    aggregates
                        .iter()
                        .map(|a| explain::aggregate_text(a, &input_names)),
                );
                names
            }
            Plan::Filter { input, .. }
            | Plan::Distinct { input }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. } => input.column_names(),
            Plan::SetOp { left, .. } => left.column_names(),
            Plan::Apply { input, subqueries } => {
                let mut names = input.column_names();
                names.extend((1..=subqueries.len()).map(|i| format!("subquery{i}")));
                names
            }
        }
    }

    /// The node's children.
    pub fn children(&self) -> Vec<&Plan> {
        match self {
            Plan::Scan(_) | Plan::Values { .. } | Plan::Series { .. } | Plan::Empty { .. } => {
                vec![]
            }
            Plan::Filter { input, .. }
            | Plan::Project { input, .. }
            | Plan::Aggregate { input, .. }
            | Plan::Distinct { input }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. }
            | Plan::Apply { input, .. } => vec![input],
            Plan::Join { left, right, .. } | Plan::SetOp { left, right, .. } => {
                vec![left, right]
            }
        }
    }

    /// The node's children, to rewrite them.
    pub fn children_mut(&mut self) -> Vec<&mut Plan> {
        match self {
            Plan::Scan(_) | Plan::Values { .. } | Plan::Series { .. } | Plan::Empty { .. } => {
                vec![]
            }
            Plan::Filter { input, .. }
            | Plan::Project { input, .. }
            | Plan::Aggregate { input, .. }
            | Plan::Distinct { input }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. }
            | Plan::Apply { input, .. } => vec![input],
            Plan::Join { left, right, .. } | Plan::SetOp { left, right, .. } => {
                vec![left, right]
            }
        }
    }

    /// The expressions of this node (not of its children), for rewriting.
    pub fn exprs_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Plan::Scan(scan) => scan.filter.iter_mut().collect(),
            Plan::Values { rows, .. } => rows.iter_mut().flatten().collect(),
            Plan::Series {
                start, stop, step, ..
            } => vec![start, stop, step],
            Plan::Empty { .. } | Plan::Distinct { .. } | Plan::Sort { .. } => vec![],
            Plan::Limit { .. } | Plan::SetOp { .. } => vec![],
            Plan::Filter { predicate, .. } => vec![predicate],
            Plan::Project { exprs, .. } => exprs.iter_mut().collect(),
            Plan::Join { on, algorithm, .. } => {
                let mut exprs: Vec<&mut Expr> = on.iter_mut().collect();
                match algorithm {
                    JoinAlgorithm::Hash {
                        left_keys,
                        right_keys,
                    } => {
                        exprs.extend(left_keys.iter_mut());
                        exprs.extend(right_keys.iter_mut());
                    }
                    JoinAlgorithm::Lookup { left_keys } => exprs.extend(left_keys.iter_mut()),
                    JoinAlgorithm::NestedLoop => {}
                }
                exprs
            }
            Plan::Aggregate {
                group_by,
                aggregates,
                ..
            } => {
                let mut exprs: Vec<&mut Expr> = group_by.iter_mut().collect();
                for call in aggregates {
                    exprs.extend(call.args.iter_mut());
                    exprs.extend(call.filter.iter_mut());
                }
                exprs
            }
            Plan::Apply { subqueries, .. } => subqueries
                .iter_mut()
                .flat_map(|s| {
                    let operand = match &mut s.kind {
                        SubqueryKind::In { operand, .. } => Some(operand),
                        _ => None,
                    };
                    operand.into_iter().chain(s.outer_keys.iter_mut())
                })
                .collect(),
        }
    }

    /// Replaces the outer references that point `levels` queries up from this plan (1: the
    /// query this plan is a subquery of) by the values of `row`. Subqueries nested inside
    /// are visited one level deeper.
    pub fn bind_outer(&mut self, row: &[crate::types::Value], levels: usize) {
        for expr in self.exprs_mut() {
            expr.bind_outer(row, levels);
        }
        if let Plan::Apply { subqueries, .. } = self {
            for subquery in subqueries {
                subquery.plan.bind_outer(row, levels + 1);
            }
        }
        for child in self.children_mut() {
            child.bind_outer(row, levels);
        }
    }

    /// Whether the plan refers to the query exactly `levels` up from it.
    pub fn refers_to_level(&self, levels: usize) -> bool {
        self.clone()
            .refers_out(levels, &|depth, levels| depth == levels)
    }

    /// Whether the plan refers to a query `levels` or more up from it (an outer reference
    /// that leaves it).
    pub fn refers_outside(&self, levels: usize) -> bool {
        self.clone()
            .refers_out(levels, &|depth, levels| depth >= levels)
    }

    /// Whether an outer reference of depth `depth` in this plan, `levels` queries below the
    /// one asked about, passes `test(depth, levels)` (subqueries are one level further).
    fn refers_out(&mut self, levels: usize, test: &dyn Fn(usize, usize) -> bool) -> bool {
        let hit =
            |e: &Expr| e.any(&|x| matches!(x, Expr::Outer { depth, .. } if test(*depth, levels)));
        if self.exprs_mut().into_iter().any(|e| hit(e)) {
            return true;
        }
        if let Plan::Apply { subqueries, .. } = self
            && subqueries
                .iter_mut()
                .any(|s| s.plan.refers_out(levels + 1, test))
        {
            return true;
        }
        self.children_mut()
            .into_iter()
            .any(|c| c.refers_out(levels, test))
    }
}
