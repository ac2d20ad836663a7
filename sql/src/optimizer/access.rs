//! Access paths: which primary-key spans of a table a scan reads, from its filter.
//!
//! For each primary-key column in order, the filter's conjuncts that constrain only that
//! column with constants give a set of values: `=`, `IN (…)` and OR of equalities give
//! points; `<`, `<=`, `>`, `>=`, `BETWEEN` and OR of those give intervals; the conjuncts'
//! sets intersect. While the sets are points, each point extends the key prefixes (a
//! composite key fixed entirely becomes point gets; at most [`MAX_POINTS`] keys, beyond
//! which the points' hull is read as a range); the first column constrained by intervals,
//! or not at all, ends the prefixes with ranges. A constant is used only if it is stored
//! as the column's values are (an integer for an integer column), so its encoding bounds
//! the column's keys; otherwise (`int_column < 2.5`) the conjunct does not narrow the read.
//!
//! The spans only narrow what is read: the scan still evaluates the whole filter on every
//! row, so a wrong span could only lose rows, never add them — the unit tests below check
//! the spans against brute force over every key.

use std::cmp::Ordering;
use std::ops::Bound;

use kv::codec::memcomparable::prefix_end;

use crate::catalog::Table;
use crate::encoding::{encode_value, index_prefix, row_prefix, row_prefix_end};
use crate::expr::{CmpOp, Expr};
use crate::plan::explain::value_text;
use crate::plan::{IndexAccess, Plan, Spans};
use crate::types::{SqlType, Value};

use super::fold::map_children_and_subqueries;

/// Point keys beyond which the points' hull is read as one range.
pub const MAX_POINTS: usize = 1024;

/// Chooses the spans of every scan.
#[recursive::recursive]
pub fn choose(plan: Plan) -> Plan {
    match plan {
        Plan::Scan(mut scan) => {
            (scan.spans, scan.index) = access_for(&scan.table, scan.filter.as_ref());
            Plan::Scan(scan)
        }
        other => map_children_and_subqueries(other, choose),
    }
}

/// An interval of values of one column.
#[derive(Clone, Debug, PartialEq)]
struct Interval {
    lower: Bound<Value>,
    upper: Bound<Value>,
}

impl Interval {
    fn point(v: Value) -> Interval {
        Interval {
            lower: Bound::Included(v.clone()),
            upper: Bound::Included(v),
        }
    }

    fn all() -> Interval {
        Interval {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }
    }

    fn as_point(&self) -> Option<&Value> {
        match (&self.lower, &self.upper) {
            (Bound::Included(a), Bound::Included(b)) if cmp(a, b) == Ordering::Equal => Some(a),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(a), Bound::Included(b)) => cmp(a, b) == Ordering::Greater,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                cmp(a, b) != Ordering::Less
            }
            _ => false,
        }
    }
}

fn cmp(a: &Value, b: &Value) -> Ordering {
    a.sql_cmp(b).unwrap_or(Ordering::Equal)
}

/// Orders lower bounds by where they start.
fn cmp_lower(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Less,
        (_, Bound::Unbounded) => Ordering::Greater,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            cmp(x, y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => cmp(x, y).then(Ordering::Less),
        (Bound::Excluded(x), Bound::Included(y)) => cmp(x, y).then(Ordering::Greater),
    }
}

/// Orders upper bounds by where they end.
fn cmp_upper(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Greater,
        (_, Bound::Unbounded) => Ordering::Less,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            cmp(x, y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => cmp(x, y).then(Ordering::Greater),
        (Bound::Excluded(x), Bound::Included(y)) => cmp(x, y).then(Ordering::Less),
    }
}

/// Whether an interval ending at `upper` and one starting at `lower` leave no gap.
fn touches(upper: &Bound<Value>, lower: &Bound<Value>) -> bool {
    match (upper, lower) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Excluded(x), Bound::Excluded(y)) => cmp(y, x) == Ordering::Less,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            cmp(y, x) != Ordering::Greater
        }
    }
}

/// Sorted, disjoint, without empty intervals.
fn normalize(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.retain(|i| !i.is_empty());
    intervals.sort_by(|a, b| cmp_lower(&a.lower, &b.lower));
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        if let Some(last) = out.last_mut()
            && touches(&last.upper, &interval.lower)
        {
            if cmp_upper(&interval.upper, &last.upper) == Ordering::Greater {
                last.upper = interval.upper;
            }
            continue;
        }
        out.push(interval);
    }
    out
}

fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let lower = match cmp_lower(&x.lower, &y.lower) {
                Ordering::Less => y.lower.clone(),
                _ => x.lower.clone(),
            };
            let upper = match cmp_upper(&x.upper, &y.upper) {
                Ordering::Greater => y.upper.clone(),
                _ => x.upper.clone(),
            };
            out.push(Interval { lower, upper });
        }
    }
    normalize(out)
}

/// Whether a constant is stored the same way as values of the column, so that its encoding
/// can bound the column's keys.
fn encodes_like(ty: SqlType, value: &Value) -> bool {
    match value {
        Value::Int(_) => ty.is_integer(),
        Value::Float(_) => ty.is_float(),
        Value::Text(_) => matches!(ty, SqlType::Text | SqlType::Varchar(_)),
        Value::Bool(_) => ty == SqlType::Bool,
        Value::Null => false,
    }
}

/// The values of `column` that `expr` allows, if `expr` constrains only that column with
/// usable constants (`None`: it does not narrow the column).
fn constrain(expr: &Expr, column: usize, ty: SqlType) -> Option<Vec<Interval>> {
    let test = |op: CmpOp, value: &Value| -> Option<Vec<Interval>> {
        if value.is_null() {
            return Some(Vec::new());
        }
        if !encodes_like(ty, value) {
            return None;
        }
        let v = value.clone();
        let interval = match op {
            CmpOp::Eq => Interval::point(v),
            CmpOp::Lt => Interval {
                lower: Bound::Unbounded,
                upper: Bound::Excluded(v),
            },
            CmpOp::LtEq => Interval {
                lower: Bound::Unbounded,
                upper: Bound::Included(v),
            },
            CmpOp::Gt => Interval {
                lower: Bound::Excluded(v),
                upper: Bound::Unbounded,
            },
            CmpOp::GtEq => Interval {
                lower: Bound::Included(v),
                upper: Bound::Unbounded,
            },
            CmpOp::NotEq => return None,
        };
        Some(vec![interval])
    };
    match expr {
        Expr::Compare {
            op,
            left,
            right,
            blank_padded: false,
        } => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Const(v)) if *c == column => test(*op, v),
            (Expr::Const(v), Expr::Column(c)) if *c == column => test(op.flip(), v),
            _ => None,
        },
        Expr::CompareEach {
            operand,
            tests,
            all,
        } if **operand == Expr::Column(column) => {
            let mut sets = Vec::with_capacity(tests.len());
            for (op, value, padded) in tests {
                let Expr::Const(v) = value else { return None };
                if *padded {
                    return None;
                }
                if !*all && v.is_null() {
                    // `x IN (…, NULL)`: the NULL never makes the test true.
                    sets.push(Vec::new());
                    continue;
                }
                sets.push(test(*op, v)?);
            }
            let combined = if *all {
                sets.iter()
                    .fold(vec![Interval::all()], |acc, s| intersect(&acc, s))
            } else {
                normalize(sets.into_iter().flatten().collect())
            };
            Some(combined)
        }
        Expr::Or(a, b) => {
            let mut both = constrain(a, column, ty)?;
            both.extend(constrain(b, column, ty)?);
            Some(normalize(both))
        }
        Expr::And(a, b) => match (constrain(a, column, ty), constrain(b, column, ty)) {
            (Some(x), Some(y)) => Some(intersect(&x, &y)),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        },
        _ => None,
    }
}

/// A key space of a table whose keys are a prefix followed by the encoded values of some
/// of its columns: its rows by primary key, or one of its indexes.
struct KeySpace<'a> {
    table: &'a Table,
    columns: &'a [usize],
    /// No two rows have equal values in all `columns`.
    unique: bool,
    prefix: Vec<u8>,
    end: Vec<u8>,
}

impl<'a> KeySpace<'a> {
    /// The table's rows, by primary key.
    fn rows(table: &'a Table) -> KeySpace<'a> {
        KeySpace {
            table,
            columns: &table.primary_key,
            unique: true,
            prefix: row_prefix(table.id),
            end: row_prefix_end(table.id),
        }
    }

    fn column_name(&self, depth: usize) -> &str {
        &self.table.columns[self.columns[depth]].name
    }

    fn key_of(&self, values: &[Value]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        for v in values {
            encode_value(&mut key, v);
        }
        key
    }
}

/// How much of a key space's columns the filter fixes: columns fixed to points, in key
/// order, then whether the next is bounded by intervals. Compared as a pair: more points
/// first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Narrowing {
    points: usize,
    bounded: bool,
    /// Every column of a unique index fixed: at most one row per point.
    single_rows: bool,
}

/// The spans a scan of `table` filtered by `filter` must read.
pub fn spans_for(table: &Table, filter: Option<&Expr>) -> Spans {
    let conjuncts: Vec<&Expr> = filter.map(Expr::conjuncts).unwrap_or_default();
    if table.primary_key.is_empty() || conjuncts.is_empty() {
        return Spans::Full;
    }
    spans_in(&KeySpace::rows(table), &conjuncts).0
}

/// How a scan of `table` filtered by `filter` reads: over primary-key spans, or over the
/// spans of a public index (`Some`) that the filter narrows more than the primary key
/// (ties go to the primary key, which needs no second read).
pub fn access_for(table: &Table, filter: Option<&Expr>) -> (Spans, Option<IndexAccess>) {
    let conjuncts: Vec<&Expr> = filter.map(Expr::conjuncts).unwrap_or_default();
    if conjuncts.is_empty() {
        return (Spans::Full, None);
    }
    let (mut best, mut narrowing) = if table.primary_key.is_empty() {
        (Spans::Full, Narrowing::default())
    } else {
        spans_in(&KeySpace::rows(table), &conjuncts)
    };
    if matches!(best, Spans::Points { .. } | Spans::Nothing) {
        return (best, None);
    }
    let mut chosen = None;
    for index in table.public_indexes() {
        let prefix = index_prefix(table.id, index.id);
        let space = KeySpace {
            table,
            columns: &index.columns,
            unique: index.unique,
            end: prefix_end(&prefix).unwrap_or_default(),
            prefix,
        };
        let (spans, by_index) = spans_in(&space, &conjuncts);
        if by_index > narrowing || matches!(spans, Spans::Nothing) {
            best = spans.into_prefix_ranges();
            narrowing = by_index;
            chosen = Some(IndexAccess {
                index: index.clone(),
                only: false,
            });
            if matches!(best, Spans::Nothing) {
                break;
            }
        }
    }
    (best, chosen)
}

fn spans_in(space: &KeySpace, conjuncts: &[&Expr]) -> (Spans, Narrowing) {
    // Key prefixes fixed so far (values), each with its text for EXPLAIN.
    let mut prefixes: Vec<Vec<Value>> = vec![Vec::new()];
    for (depth, &column) in space.columns.iter().enumerate() {
        let ty = space.table.columns[column].ty;
        let mut allowed: Option<Vec<Interval>> = None;
        for conjunct in conjuncts {
            if let Some(set) = constrain(conjunct, column, ty) {
                allowed = Some(match allowed {
                    Some(prev) => intersect(&prev, &set),
                    None => set,
                });
            }
        }
        let Some(intervals) = allowed else {
            let narrowing = Narrowing {
                points: depth,
                bounded: false,
                single_rows: false,
            };
            return (
                ranges(space, &prefixes, &[Interval::all()], depth),
                narrowing,
            );
        };
        let narrowing = Narrowing {
            points: depth,
            bounded: true,
            single_rows: false,
        };
        if intervals.is_empty() {
            return (Spans::Nothing, narrowing);
        }
        let points: Option<Vec<&Value>> = intervals.iter().map(Interval::as_point).collect();
        match points {
            Some(points) if prefixes.len() * points.len() <= MAX_POINTS => {
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| {
                        points.iter().map(move |v| {
                            let mut next = p.clone();
                            next.push((*v).clone());
                            next
                        })
                    })
                    .collect();
            }
            Some(points) => {
                let hull = Interval {
                    lower: Bound::Included(points[0].clone()),
                    upper: Bound::Included(points[points.len() - 1].clone()),
                };
                return (ranges(space, &prefixes, &[hull], depth), narrowing);
            }
            None => return (ranges(space, &prefixes, &intervals, depth), narrowing),
        }
    }
    let keys = prefixes.iter().map(|values| space.key_of(values)).collect();
    let narrowing = Narrowing {
        points: space.columns.len(),
        bounded: false,
        single_rows: space.unique,
    };
    let spans = Spans::Points {
        keys,
        shown: points_text(space, &prefixes),
    };
    (spans, narrowing)
}

/// Ranges: each prefix with each interval of the next key column (`depth`).
fn ranges(
    space: &KeySpace,
    prefixes: &[Vec<Value>],
    intervals: &[Interval],
    depth: usize,
) -> Spans {
    if depth == 0 && intervals == [Interval::all()] {
        return Spans::Full;
    }
    let mut out = Vec::new();
    let mut shown = Vec::new();
    for prefix in prefixes {
        let base = space.key_of(prefix);
        let base_end = if prefix.is_empty() {
            space.end.clone()
        } else {
            prefix_end(&base).unwrap_or_default()
        };
        for interval in intervals {
            let with = |v: &Value| {
                let mut key = base.clone();
                encode_value(&mut key, v);
                key
            };
            let start = match &interval.lower {
                Bound::Unbounded => base.clone(),
                Bound::Included(v) => with(v),
                Bound::Excluded(v) => prefix_end(&with(v)).unwrap_or_default(),
            };
            let end = match &interval.upper {
                Bound::Unbounded => base_end.clone(),
                Bound::Included(v) => prefix_end(&with(v)).unwrap_or_default(),
                Bound::Excluded(v) => with(v),
            };
            if start < end {
                out.push((start, end));
                shown.push(range_text(space, prefix, interval, depth));
            }
        }
    }
    if out.is_empty() {
        return Spans::Nothing;
    }
    Spans::Ranges {
        ranges: out,
        shown: shown.join(", "),
    }
}

fn prefix_text(space: &KeySpace, prefix: &[Value]) -> Vec<String> {
    prefix
        .iter()
        .enumerate()
        .map(|(d, v)| format!("{} = {}", space.column_name(d), value_text(v)))
        .collect()
}

fn range_text(space: &KeySpace, prefix: &[Value], interval: &Interval, depth: usize) -> String {
    let mut parts = prefix_text(space, prefix);
    let name = space.column_name(depth);
    match &interval.lower {
        Bound::Included(v) => parts.push(format!("{name} >= {}", value_text(v))),
        Bound::Excluded(v) => parts.push(format!("{name} > {}", value_text(v))),
        Bound::Unbounded => {}
    }
    match &interval.upper {
        Bound::Included(v) => parts.push(format!("{name} <= {}", value_text(v))),
        Bound::Excluded(v) => parts.push(format!("{name} < {}", value_text(v))),
        Bound::Unbounded => {}
    }
    parts.join(" AND ")
}

fn points_text(space: &KeySpace, prefixes: &[Vec<Value>]) -> String {
    if let [only] = prefixes {
        return prefix_text(space, only).join(" AND ");
    }
    if space.columns.len() == 1 {
        let values: Vec<String> = prefixes.iter().map(|p| value_text(&p[0])).collect();
        return format!("{} IN ({})", space.column_name(0), values.join(", "));
    }
    let names: Vec<&str> = (0..space.columns.len())
        .map(|d| space.column_name(d))
        .collect();
    let tuples: Vec<String> = prefixes
        .iter()
        .map(|p| {
            let values: Vec<String> = p.iter().map(value_text).collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!("({}) IN ({})", names.join(", "), tuples.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use crate::encoding::row_key;

    fn table() -> Table {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: false,
            default: Value::Null,
            identity: None,
            missing: Value::Null,
        };
        Table::new(
            100,
            "t".into(),
            vec![
                column("a", SqlType::Int),
                column("b", SqlType::Int),
                column("c", SqlType::Int),
            ],
            vec![0, 1],
        )
    }

    fn cmp_expr(op: CmpOp, column: usize, value: i64) -> Expr {
        Expr::Compare {
            op,
            left: Box::new(Expr::Column(column)),
            right: Box::new(Expr::Const(Value::Int(value))),
            blank_padded: false,
        }
    }

    fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }

    fn or(a: Expr, b: Expr) -> Expr {
        Expr::Or(Box::new(a), Box::new(b))
    }

    fn in_list(column: usize, values: &[i64]) -> Expr {
        Expr::CompareEach {
            operand: Box::new(Expr::Column(column)),
            tests: values
                .iter()
                .map(|v| (CmpOp::Eq, Expr::Const(Value::Int(*v)), false))
                .collect(),
            all: false,
        }
    }

    fn between(column: usize, low: i64, high: i64) -> Expr {
        Expr::CompareEach {
            operand: Box::new(Expr::Column(column)),
            tests: vec![
                (CmpOp::GtEq, Expr::Const(Value::Int(low)), false),
                (CmpOp::LtEq, Expr::Const(Value::Int(high)), false),
            ],
            all: true,
        }
    }

    /// Whether the spans cover `key`.
    fn covers(spans: &Spans, key: &[u8]) -> bool {
        match spans {
            Spans::Full => true,
            Spans::Nothing => false,
            Spans::Points { keys, .. } => keys.iter().any(|k| k == key),
            Spans::Ranges { ranges, .. } => ranges
                .iter()
                .any(|(s, e)| s.as_slice() <= key && key < e.as_slice()),
        }
    }

    /// Every row the filter matches (over a grid of keys) lies in the spans.
    fn check_against_brute_force(filter: &Expr) -> Spans {
        let t = table();
        let spans = spans_for(&t, Some(filter));
        for a in -2..12 {
            for b in -2..12 {
                let row = [Value::Int(a), Value::Int(b), Value::Int(0)];
                if filter.is_true(&row).expect("evaluates") {
                    let key = row_key(t.id, [&row[0], &row[1]]);
                    assert!(
                        covers(&spans, &key),
                        "{filter:?}: ({a}, {b}) not in {spans:?}"
                    );
                }
            }
        }
        spans
    }

    #[test]
    fn full_key_equality_is_a_point_get() {
        let spans =
            check_against_brute_force(&and(cmp_expr(CmpOp::Eq, 1, 3), cmp_expr(CmpOp::Eq, 0, 5)));
        let Spans::Points { keys, shown } = spans else {
            panic!("points expected")
        };
        assert_eq!(keys, vec![row_key(100, [&Value::Int(5), &Value::Int(3)])]);
        assert_eq!(shown, "a = 5 AND b = 3");
    }

    #[test]
    fn in_lists_multiply_into_points() {
        let spans = check_against_brute_force(&and(in_list(0, &[3, 1]), in_list(1, &[7, 2, 7])));
        let Spans::Points { keys, shown } = spans else {
            panic!("points expected")
        };
        assert_eq!(keys.len(), 4);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(shown, "(a, b) IN ((1, 2), (1, 7), (3, 2), (3, 7))");
    }

    #[test]
    fn between_and_or_of_ranges_make_ranges() {
        let spans = check_against_brute_force(&between(0, 3, 6));
        let Spans::Ranges { ranges, shown } = &spans else {
            panic!("ranges expected")
        };
        assert_eq!(ranges.len(), 1);
        assert_eq!(shown, "a >= 3 AND a <= 6");
        let spans =
            check_against_brute_force(&or(cmp_expr(CmpOp::Lt, 0, 2), cmp_expr(CmpOp::Gt, 0, 8)));
        let Spans::Ranges { ranges, shown } = &spans else {
            panic!("ranges expected")
        };
        assert_eq!(ranges.len(), 2);
        assert_eq!(shown, "a < 2, a > 8");
        // Overlapping ORs merge; a prefix point with a range on the next column.
        let spans = check_against_brute_force(&and(
            cmp_expr(CmpOp::Eq, 0, 4),
            or(between(1, 1, 5), between(1, 3, 9)),
        ));
        let Spans::Ranges { shown, .. } = &spans else {
            panic!("ranges expected")
        };
        assert_eq!(shown, "a = 4 AND b >= 1 AND b <= 9");
    }

    #[test]
    fn contradictions_and_nulls_read_nothing() {
        assert_eq!(
            check_against_brute_force(&and(cmp_expr(CmpOp::Gt, 0, 5), cmp_expr(CmpOp::Lt, 0, 3))),
            Spans::Nothing
        );
        let eq_null = Expr::Compare {
            op: CmpOp::Eq,
            left: Box::new(Expr::Column(0)),
            right: Box::new(Expr::Const(Value::Null)),
            blank_padded: false,
        };
        assert_eq!(check_against_brute_force(&eq_null), Spans::Nothing);
    }

    #[test]
    fn unusable_conditions_scan_the_whole_table() {
        // A non-key column, a float constant against an integer key, <>, and an OR that
        // leaves the key column.
        assert_eq!(
            check_against_brute_force(&cmp_expr(CmpOp::Eq, 2, 1)),
            Spans::Full
        );
        let float = Expr::Compare {
            op: CmpOp::Eq,
            left: Box::new(Expr::Column(0)),
            right: Box::new(Expr::Const(Value::Float(1.5))),
            blank_padded: false,
        };
        assert_eq!(spans_for(&table(), Some(&float)), Spans::Full);
        assert_eq!(
            check_against_brute_force(&cmp_expr(CmpOp::NotEq, 0, 1)),
            Spans::Full
        );
        assert_eq!(
            check_against_brute_force(&or(cmp_expr(CmpOp::Eq, 0, 1), cmp_expr(CmpOp::Eq, 2, 2))),
            Spans::Full
        );
    }

    #[test]
    fn a_second_key_column_without_a_constraint_makes_a_prefix_range() {
        let spans = check_against_brute_force(&and(in_list(0, &[1, 9]), cmp_expr(CmpOp::Gt, 2, 0)));
        let Spans::Ranges { ranges, shown } = &spans else {
            panic!("ranges expected")
        };
        assert_eq!(ranges.len(), 2);
        assert_eq!(shown, "a = 1, a = 9");
    }
}
