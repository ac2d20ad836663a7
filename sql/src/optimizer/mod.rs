//! The optimizer: rules that rewrite a bound plan into one that reads less and joins better,
//! applied in order, each a pure `Plan → Plan` function in its own file:
//!
//! 1. [`fold`]: constant folding; a filter that is never true becomes an empty input.
//!    Then [`decorrelate`]: a subquery correlated only by equalities runs once, its rows
//!    looked up by key for each outer row.
//! 2. [`pushdown`]: WHERE and ON conjuncts move as far down as they may go: into scans,
//!    into the sides of joins, below projections, sorts and grouping keys; conditions over
//!    both sides of an inner join become its join condition (so comma joins become joins).
//! 3. [`join_order`]: inner joins are reordered so that no cross product is formed while a
//!    condition could join the next table (never worse than the written left-deep order).
//! 4. [`access`]: each scan reads only the primary-key spans its filter allows (point gets,
//!    ranges, IN lists, BETWEEN, OR of ranges), or an index's, when the filter narrows an
//!    index more. Then [`order`]: a sort the scan's key order satisfies is dropped (under a
//!    LIMIT, a full scan may switch to an index that gives the order).
//! 5. [`join_algorithm`]: equi-joins become hash joins, or lookup joins (point gets by the
//!    right table's primary key) when the left side is small; others stay nested loops.
//! 6. [`prune`]: values nothing above reads are neither computed nor held by sorts and join
//!    build sides.
//! 7. [`limit`]: a LIMIT over a scan bounds the scan's first read; over a sort, makes it a
//!    top-N sort.
//! 8. [`fold`] again, which also merges a projection into the one above it.
//!
//! Every rule keeps the plan's results the same; a scan's filter is still evaluated on
//! every row read, so spans only narrow what is read.

pub mod access;
mod decorrelate;
mod fold;
mod join_algorithm;
mod join_order;
mod limit;
mod order;
mod prune;
mod pushdown;

use crate::error::SqlResult;
use crate::expr::Expr;
use crate::plan::Plan;

/// Which side of a join an expression over the join's row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
    Both,
    /// No column at all (a constant or an outer reference).
    Neither,
}

/// The side `expr` reads, the join's left input being `left_width` columns wide.
fn side_of(expr: &Expr, left_width: usize) -> Side {
    let used = expr.columns_used();
    if used.is_empty() {
        Side::Neither
    } else if used.iter().all(|&c| c < left_width) {
        Side::Left
    } else if used.iter().all(|&c| c >= left_width) {
        Side::Right
    } else {
        Side::Both
    }
}

/// Runs every rule.
pub fn optimize(plan: Plan) -> SqlResult<Plan> {
    let plan = fold::fold(plan);
    let plan = decorrelate::decorrelate(plan);
    let plan = pushdown::push_down(plan);
    let plan = fold::fold(plan);
    let plan = join_order::reorder(plan);
    let plan = access::choose(plan);
    let plan = order::elide(plan);
    let plan = join_algorithm::choose(plan);
    let plan = prune::prune(plan);
    let plan = limit::hint(plan);
    // Again: join reordering may have left a projection over a projection.
    Ok(fold::fold(plan))
}
